"""HuggingFace transformers' Reformer LSH attention, driven on our q and v: the LSH attention of
Kitaev, Kaiser and Levskaya (2020, "Reformer: The Efficient Transformer", ICLR, arXiv:2001.04451,
section 3) as ``LSHSelfAttention`` computes it. Layout ``[B, H, N, D]`` as in
``harness.measure.backend``; HF's module takes hidden states ``[B, N, H D]``.

Parameter mapping: ``n_hashes`` is HF's ``num_hashes``, ``chunk_size`` c its
``lsh_attn_chunk_length`` (with ``lsh_num_chunks_before = 1``, ``..._after = 0``: a chunk attends
itself and the chunk before it, as ours), ``n_buckets`` its ``num_buckets``. Unset, our default
``max(2, 2 round(K N / 2c))`` (``--buckets-per-chunk`` K, 2 by default: the paper's 2N/c) is
passed (HF's own, were it left unset, is ``2^floor(log2(2N / c))``, factorised when large: the
power of two at or below ours). HF's ``hash_seed`` is ``inputs.seed``.

What runs in the closure: the module's ``forward`` (hashing, sort, chunked attention, reverse
sort, merge of the rounds), which cannot be bypassed piecewise without rewriting it. Its two
projections are replaced (a monkeypatch in ``prepare``) by column selections of hidden states
that hold q and v side by side (``common.Columns``: identity projections, views, no arithmetic);
laying them side by side and the output back is O(N D) copying, timed with the call.

HF's conventions, which ``mask`` and ``reference`` follow (they differ from ours,
``attention_impls.reformer``):
- shared QK always (the k input is ignored): keys are HF's ``_len_and_dim_norm(q)``,
  ``q / sqrt(mean(q^2) + 1e-6) / sqrt(D)``, and the logits ``q . key`` carry no further
  ``1 / sqrt(D)``: ``sqrt(D)`` times ours, whose keys are ``q / |q|`` under ``1 / sqrt(D)``.
- rotations: drawn in every forward, ``torch.manual_seed(hash_seed)`` then ``torch.randn`` on the
  inputs' device and dtype (so the global torch generator is reseeded by each call; the draw is
  timed, as HF makes it in every forward).
- the rounds are sorted as one sequence of ``n_hashes N`` slots cut into chunks, so the first
  chunk of round r looks back to the last chunk of round r - 1 (round 0 to the last round's);
  a token can then appear twice in one row (its own round and the previous round's last chunk).
- a query's self pair is set to ``-1e5`` (``-1e3`` in float16), not removed; padded keys to
  ``-1e9`` (``-1e4``): both weigh 0 here, since every row has other keys.
- the rounds are merged with weights ``softmax_r(logsumexp_r)`` and no deduplication: a pair met
  in several rounds (or twice in one row) counts that many times. So ``reference`` computes HF's
  formula densely: per round, softmax under that round's counts (from HF's own hashes and
  sort, ``_hash_vectors``, ``_get_sorted_bucket_idx_and_undo_sorted_bucket_idx``), then the
  rounds merged with their log-sum-exps. ``mask`` is the pairs with weight: the union of the
  rounds' windows, without self.
Padding: HF needs ``N`` a multiple of c; q and v are padded with zeros and an attention mask
marks the padding, as ``ReformerModel._pad_to_mult_of_chunk_length`` does (HF's model refuses to
pad in training mode; its attention layer, which we drive, computes the padded case either way).
At ``N <= c`` HF computes plain attention without hashing: refused.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from attention_impls.lsh import num_buckets
from attention_impls.peers import optional
from attention_impls.peers.common import Columns, padded
from attention_impls.reformer import ReformerParams
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import narrowed
from harness.measure.reference import reference_dtype
from harness.measure.registry import register
from harness.store.facts import Promise
from harness.store.limits import MAX_HASHES

MODULE = "transformers.models.reformer.modeling_reformer"


def side_by_side(n_pad: int, *tensors: torch.Tensor) -> torch.Tensor:
    """HF's hidden states: ``[B, H, N, D]`` tensors padded to ``n_pad`` and laid side by side,
    ``[B, Np, k H D]``."""
    b, h, _, d = tensors[0].shape
    merged = [padded(t, n_pad).transpose(1, 2).reshape(b, n_pad, h * d) for t in tensors]
    return torch.cat(merged, dim=-1)


@register
class HFReformer(AttentionBackend):
    name = "hf-reformer"
    family = "reformer"
    description = "HF transformers' LSHSelfAttention (shared QK, its own conventions)"
    implementation = "transformers"
    is_sparse = True
    promise = Promise(1, log=True)
    preload = (MODULE,)
    Params = narrowed(
        ReformerParams,
        "n_hashes",
        "n_buckets",
        "buckets_per_chunk",
        "chunk_size",
        qualname="HFReformer.Params",
    )
    # HF's conventions, in our family's parameters (the module docstring)
    fixed_pattern: ClassVar[dict[str, bool]] = {
        "unscaled_logits": True, "count_per_round": True, "look_back_across_rounds": True
    }  # fmt: skip
    why_not: ClassVar[dict[str, str]] = {
        "gqa": "HF's keys are its queries, one per query head, and v has as many heads",
        "decoding": "HF decodes one token at a time through its own bucket cache only",
        "documents": "a bucket's chunks ignore document boundaries",
    }

    def shape_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().shape_reasons(inputs)
        if inputs.causal:  # the family has none; HF's is_decoder mask is not driven here
            reasons.append("HF's is_decoder (causal) LSH attention is not driven here")
        return reasons

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs) + self.param_errors(inputs.seq_len)
        if inputs.seq_len <= self.params.chunk_size:
            reasons.append(
                f"HF computes plain attention without hashing at N <= chunk_size "
                f"{self.params.chunk_size}"
            )
        reason = optional.missing(MODULE, "transformers")
        return reasons + ([reason] if reason else [])

    def param_errors(self, seq_len: int) -> list[str]:
        """The family's rules (``attention_impls.reformer``); HF's own limits are reasons."""
        p, errors = self.params, []
        if not 1 <= p.n_hashes <= MAX_HASHES:
            errors.append(f"n_hashes must be from 1 to {MAX_HASHES}, got {p.n_hashes}")
        if p.chunk_size < 2:
            errors.append(f"chunk_size must be >= 2, got {p.chunk_size}")
        elif p.chunk_size > seq_len:
            errors.append(f"chunk_size {p.chunk_size} exceeds the sequence length {seq_len}")
        if p.n_buckets is not None and (p.n_buckets < 2 or p.n_buckets % 2):
            errors.append(f"n_buckets must be even and >= 2, got {p.n_buckets}")
        elif p.n_buckets is not None and p.n_buckets > seq_len:
            errors.append(f"n_buckets {p.n_buckets} is more than the {seq_len} positions")
        return errors

    def buckets(self, seq_len: int) -> int:
        return num_buckets(self.params, seq_len)

    def padded_length(self, seq_len: int) -> int:
        return -(-seq_len // self.params.chunk_size) * self.params.chunk_size

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        """Per round, the 2c slots of a query's two chunks less itself, counted per round (the
        work HF does; an upper bound on the distinct pairs), at most the N - 1 other keys."""
        per_round = 2 * self.params.chunk_size - 1
        return float(seq_len * min(self.params.n_hashes * per_round, seq_len - 1))

    def module(self, inputs: Inputs):
        """HF's module for ``inputs``, its projections replaced by column selections of hidden
        states that hold q, then v."""
        from transformers.models.reformer.modeling_reformer import LSHSelfAttention, ReformerConfig

        _, h, n, d = inputs.shape
        p = self.params
        config = ReformerConfig(
            hidden_size=h * d, num_attention_heads=h, attention_head_size=d, attn_layers=["lsh"],
            lsh_attn_chunk_length=p.chunk_size, num_hashes=p.n_hashes,
            num_buckets=self.buckets(n), lsh_num_chunks_before=1, lsh_num_chunks_after=0,
            hash_seed=inputs.seed, is_decoder=False, lsh_attention_probs_dropout_prob=0.0,
        )  # fmt: skip
        attn = LSHSelfAttention(config).to(inputs.device).eval()
        attn.query_key, attn.value = Columns(0, h * d), Columns(h * d, 2 * h * d)
        return attn

    def padding_mask(self, inputs: Inputs) -> torch.Tensor | None:
        """HF's attention mask ``[B, Np]`` (True: a real token), None where nothing is padded."""
        n, n_pad = inputs.seq_len, self.padded_length(inputs.seq_len)
        if n_pad == n:
            return None
        real = torch.zeros(inputs.batch, n_pad, dtype=torch.bool, device=inputs.device)
        real[:, :n] = True
        return real

    def prepare(self, inputs: Inputs) -> AttentionFn:
        b, h, n, d = inputs.shape
        n_pad, attn, real = self.padded_length(n), self.module(inputs), self.padding_mask(inputs)

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            hidden = side_by_side(n_pad, q, v)  # [B, Np, 2HD]: q, then v
            out = attn(hidden, attention_mask=real).hidden_states  # [B, Np, HD]
            return out.view(b, n_pad, h, d).transpose(1, 2)[:, :, :n]  # [B, H, N, D]

        return fn

    def hf_chunks(self, inputs: Inputs, q: torch.Tensor) -> torch.Tensor:
        """``[B, H, R, Np]``: the chunk of every token in every round, numbered along the one
        sorted sequence of all rounds, from HF's own hashing and sort of ``q``."""
        n_pad, rounds = self.padded_length(inputs.seq_len), self.params.n_hashes
        attn = self.module(inputs)
        with torch.no_grad():
            q = q.detach().to(device=inputs.device, dtype=inputs.dtype)
            hidden = side_by_side(n_pad, q, torch.zeros_like(q))  # as the closure lays out q
            qk = attn._split_hidden_size_dim(attn.query_key(hidden), inputs.heads, inputs.head_dim)
            buckets = attn._hash_vectors(qk, rounds, self.padding_mask(inputs))
            _, undo = attn._get_sorted_bucket_idx_and_undo_sorted_bucket_idx(n_pad, buckets, rounds)
        slots = undo.view(*undo.shape[:2], rounds, n_pad)  # [B, H, R, Np] place in the sequence
        return (slots // self.params.chunk_size).to(q.device)

    def round_counts(self, chunks: torch.Tensor, r: int, rows: torch.Tensor, n: int):
        """``[B, H, M, N]`` uint8: how many times query ``rows`` score each real key in round
        ``r``: the keys of the query's chunk and of the chunk before it in the one sequence of
        all rounds (``chunks`` from ``hf_chunks``), where a key sits once per round."""
        total = chunks.shape[2] * chunks.shape[3] // self.params.chunk_size
        own = chunks[:, :, r, rows.to(chunks.device), None]  # [B, H, M, 1]
        counts = torch.zeros(*own.shape[:-1], n, dtype=torch.uint8, device=chunks.device)
        for r_key in range(chunks.shape[2]):
            slot = chunks[:, :, r_key, None, :n]  # [B, H, 1, N]
            counts += slot == own
            counts += slot == (own - 1) % total
        return counts  # [B, H, M, N]

    def reference_keys(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """HF's keys in our convention (scores ``q . key / sqrt(D)``): ``q / rms(q)``."""
        return q * torch.rsqrt(q.pow(2).mean(dim=-1, keepdim=True) + 1e-6)

    def reference(self, inputs, q, k, v, rows, compute_dtype=None) -> torch.Tensor:
        """HF's formula, densely: per round, softmax under that round's counts, self at HF's
        constant; the rounds merged by the softmax of their log-sum-exps (a running merge, so
        that one round's ``[B, H, M, N]`` is held at a time)."""
        compute_dtype = reference_dtype(q.device, compute_dtype)
        chunks = self.hf_chunks(inputs, q)
        qc, vc = q.to(compute_dtype), v.to(compute_dtype)
        keys = self.reference_keys(qc, None)
        scores = (qc[:, :, rows] @ keys.transpose(-1, -2)) * inputs.head_dim**-0.5  # [B, H, M, N]
        is_self = rows.to(q.device)[:, None] == torch.arange(inputs.seq_len, device=q.device)
        self_value = -1e3 if inputs.dtype == torch.float16 else -1e5
        scores = scores.masked_fill(is_self, self_value)
        out = total = None
        for r in range(self.params.n_hashes):
            counts = self.round_counts(chunks, r, rows, inputs.seq_len)
            logits = scores + counts.to(compute_dtype).log()  # [B, H, M, N]
            lse = logits.logsumexp(dim=-1, keepdim=True)  # [B, H, M, 1]
            round_out = (logits - lse).exp() @ vc  # [B, H, M, D]
            if out is None:
                out, total = round_out, lse
                continue
            merged = torch.logaddexp(total, lse)
            out = out * (total - merged).exp() + round_out * (lse - merged).exp()
            total = merged
        return out  # [B, H, M, D]

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        n = inputs.seq_len
        rows = torch.arange(n) if rows is None else rows
        chunks = self.hf_chunks(inputs, q)
        attend = self.round_counts(chunks, 0, rows, n) > 0  # [B, H, M, N]
        for r in range(1, self.params.n_hashes):
            attend |= self.round_counts(chunks, r, rows, n) > 0
        is_self = rows.to(q.device)[:, None] == torch.arange(n, device=q.device)  # [M, N]
        alone = ~(attend & ~is_self).any(dim=-1, keepdim=True)  # no key but itself
        return attend & (~is_self | alone)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Peak of HF's forward, fitted to measured peaks (CPU, float32, c 64, four rounds, D 64:
        within 5%): per round and padded token, its ``2c`` chunk scores three times (products,
        masked copies, probabilities) and two boolean masks of that size, and five vectors (q
        and v repeated per round and gathered, the normalised keys); with a backward pass five
        score tensors and seven vectors."""
        b, h, n, d = inputs.shape
        n_pad, rounds, c = self.padded_length(n), self.params.n_hashes, self.params.chunk_size
        slots = b * h * rounds * n_pad
        scores, vectors = slots * 2 * c, slots * d
        copies = (5, 7) if inputs.requires_grad else (3, 5)
        return int((copies[0] * scores + copies[1] * vectors) * inputs.element_size + 2 * scores)
