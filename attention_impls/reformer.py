"""Reformer LSH attention (Kitaev, Kaiser and Levskaya, 2020, "Reformer: The Efficient
Transformer", ICLR, arXiv:2001.04451, sec. 3).

Layout ``[B, H, N, D]`` as in ``harness.measure.backend``. Pattern, for each of ``n_hashes`` rounds
r:

- angular LSH: with a random rotation ``R_r`` of shape ``[D, n_buckets / 2]`` per head,
  ``bucket(x) = argmax([x R_r ; -x R_r])``. The rotations are standard normal from a generator
  seeded with ``inputs.seed``, drawn once in ``prepare``; ``mask`` draws the same ones.
- tokens are sorted by (bucket, position) and the sorted order is cut into chunks of
  ``chunk_size`` c. Query chunk i attends key chunks i and i - 1 (when there is only one chunk,
  itself only). This rule is ``meets``/``occurrences``, which ``mask``, the kernel
  (``attention_impls.reformer_chunks``) and flex-reformer (``attention_impls.flex_reformer``)
  follow; the hashing and sort are ``attention_impls.lsh``.
- grouped-query attention (without shared-QK): every query head hashes and sorts the keys of its
  key/value head with its own rotations, so k and v are repeated to the ``H`` query heads first.
- ``shared_qk`` (the paper's setting): the keys are the unit-normalised queries
  ``q / ||q||`` (the k input is ignored), queries and keys share one sort, and a token does not
  attend to itself unless it has no other key. Without it, q and k are hashed with the same
  rotations and sorted separately.
- merging the rounds: each round gives a chunk-softmax output and its log-sum-exp; the rounds
  are weighted by the softmax of those log-sum-exps.

Conventions, each a parameter, where the paper, HuggingFace's ``LSHSelfAttention``
(``models/reformer/modeling_reformer.py``) and trax differ; the default is the paper's where it
says, else this module's choice before issue 16:

- buckets (``--buckets-per-chunk K``, default 2): without ``--buckets``, ``max(2, 2 round(K N /
  2c))``. 2 is the paper's ``n_buckets = 2 l / m`` (sec. 2.1, chunks of ``m = 2 l / n_buckets``:
  an average bucket is half a chunk) and HF's (``_set_num_buckets``: the power of two at or
  below ``2 N / c``); 1, about one bucket per chunk, was this module's default, with no source.
  Hashing time grows with the buckets (``N^2 D / c`` over ``K``).
- logit scale (``--unscaled-logits``; default scaled): ``q . k / sqrt(D)``, the paper's
  attention (its eq. 1); HF and trax score shared-QK pairs ``q . q_j / ||q_j||``
  (``_len_and_dim_norm`` makes the keys unit vectors and no ``1/sqrt(D)`` follows), which the
  option computes (``reference_keys`` scales the keys by ``sqrt(D)`` so that the dense
  reference's ``1/sqrt(D)`` cancels).
- repeated pairs (``--count-per-round``; default counted once): the paper's multi-round formula
  subtracts ``log N_ij``, the number of rounds in which ``j`` is in ``i``'s window, so a pair met
  in several rounds counts once and the output is softmax over the union of the rounds'
  windows (``mask``). HF and trax merge the rounds' softmaxes without it: a pair weighs as many
  times as it is met, a mixture of per-round softmaxes, no longer softmax under one mask
  (``reference`` is then the dense formula with ``log count`` added).
- look-back (``--look-back-across-rounds``; default within the round): the paper's windows are
  per round, so chunk 0 looks back to its own round's last chunk; HF and trax lay the rounds
  end to end, so chunk 0 looks back to the previous round's last chunk (``_look_adjacent`` over
  ``num_hashes * n_chunks`` chunks), and a key may then sit twice in one window (counted twice
  per round with ``--count-per-round``, once overall without). One round or one chunk: the same.

Lengths that c does not divide are padded to a multiple of it: padded tokens get the extra
bucket id ``n_buckets`` so they sort to the end, padded keys are masked and padded query rows
are dropped. Memory is O(B H n_hashes N c) for the chunk scores, which bound the hashing's too;
nothing is N x N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from attention_impls.lsh import lsh_sort, rotations, unit_keys
from attention_impls.reformer_chunks import chunk_attention, chunk_bytes
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs, expand_heads
from harness.measure.params import param
from harness.measure.reference import reference_dtype
from harness.measure.registry import register
from harness.store.facts import Promise
from harness.store.limits import MAX_HASHES


@dataclass(frozen=True)
class ReformerParams:
    n_hashes: int = param(4, "--hashes", "hash rounds", low=1)
    n_buckets: int | None = param(
        None, "--buckets", "buckets, even (default: max(2, 2 round(K N / 2c)))", low=1
    )
    chunk_size: int = param(64, "--chunk-size", "chunk size c", low=1)
    shared_qk: bool = param(
        True, "--no-shared-qk", "hash separate keys instead of the unit-normalised queries"
    )
    buckets_per_chunk: int = param(
        2, "--buckets-per-chunk", "K of the default bucket count (2: the paper's 2N/c)", low=1
    )
    unscaled_logits: bool = param(
        False, "--unscaled-logits", "logits q . k without 1/sqrt(D), as HF and trax"
    )
    count_per_round: bool = param(
        False, "--count-per-round", "a pair met in several rounds weighs per round, as HF"
    )
    look_back_across_rounds: bool = param(
        False, "--look-back-across-rounds", "chunk 0 looks back to the previous round, as HF"
    )


def meets(chunk_q: torch.Tensor, chunk_k: torch.Tensor, n_chunks: int | torch.Tensor):
    """Whether a query in sorted chunk ``chunk_q`` attends the keys in chunk ``chunk_k`` (chunk
    ids of one round, broadcast; ``n_chunks`` chunks): the key's chunk is the query's or the one
    before it, wrapping (chunk 0's previous chunk is the last; one chunk attends itself)."""
    return (chunk_q - chunk_k + n_chunks) % n_chunks <= 1


def occurrences(
    chunk_q: torch.Tensor, chunk_k: torch.Tensor, prev_k: torch.Tensor, n_chunks: int, cross: bool
) -> torch.Tensor:
    """How many times a key sits in the window of a query of one round (uint8, broadcast): the
    query's chunk ``chunk_q`` and the key's ``chunk_k`` in that round, ``prev_k`` in the round
    before. Within the round: ``meets``. Across rounds: the query's chunk, the one before it,
    and for chunk 0 the previous round's last chunk (a key can be in both)."""
    if not cross:
        return meets(chunk_q, chunk_k, n_chunks).to(torch.uint8)
    # the chunk before in the round, or for chunk 0 the last of the round before (exclusive)
    before = (chunk_q == chunk_k + 1) | ((chunk_q == 0) & (prev_k == n_chunks - 1))
    return (chunk_q == chunk_k).to(torch.uint8) + before.to(torch.uint8)


def reformer_pairs(n: int, n_hashes: int, c: int, shared_qk: bool) -> int:
    # Each round, a query scores its own chunk and the previous one of the sorted order: 2c keys,
    # or the whole sequence when it fits in one chunk; shared-QK drops the query itself (it has
    # other keys whenever N >= 2). A pair met in several rounds is counted once per round (the
    # work the scheme does), so this is an upper bound on the distinct pairs of ``mask``; padded
    # slots of the last chunk are also counted as keys. No query exceeds the N (N - 1) keys there.
    own = 1 if shared_qk and n >= 2 else 0
    per_round = (2 * c if -(-n // c) >= 2 else n) - own
    return n * min(n_hashes * per_round, n - own)


@register
class Reformer(AttentionBackend):
    name = "reformer"
    family = "reformer"
    description = "LSH buckets, sorted chunks attend themselves and the previous chunk"
    is_sparse = True
    Params = ReformerParams
    promise = Promise(1, log=True)
    # Grouped-query attention without shared-QK only (``shape_reasons``). Decoding and packed
    # documents are refused: each round pairs the i-th chunk of the sorted queries with the
    # i-th (and previous) chunk of the sorted keys, so queries and keys are the same N tokens,
    # and a bucket's chunk ignores document boundaries (a query could be left with no key).
    supports_gqa = True
    why_not: ClassVar[dict[str, str]] = {
        "decoding": "each round pairs chunks of the same N sorted queries and keys",
        "documents": "a bucket's chunks ignore document boundaries",
    }

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        """Expected pairs: the pattern depends on the input values (an upper bound on the
        distinct pairs of ``mask``, counted per round as the scheme computes them)."""
        p = self.params
        return float(reformer_pairs(seq_len, p.n_hashes, p.chunk_size, p.shared_qk))

    def param_errors(self, seq_len: int) -> list[str]:
        p, errors = self.params, []
        if p.n_hashes < 1:
            errors.append(f"n_hashes must be >= 1, got {p.n_hashes}")
        elif p.n_hashes > MAX_HASHES:  # each round is another sort and attention pass
            errors.append(f"n_hashes must be at most {MAX_HASHES}, got {p.n_hashes}")
        if p.chunk_size < 2:
            errors.append(f"chunk_size must be >= 2, got {p.chunk_size}")
        elif p.chunk_size > seq_len:  # the sequence is padded to whole chunks
            errors.append(f"chunk_size {p.chunk_size} exceeds the sequence length {seq_len}")
        if p.buckets_per_chunk < 1:
            errors.append(f"buckets_per_chunk must be >= 1, got {p.buckets_per_chunk}")
        elif p.n_buckets is None and p.chunk_size >= 2 and p.buckets_per_chunk > p.chunk_size:
            errors.append(
                f"buckets_per_chunk {p.buckets_per_chunk} is more than the chunk size "
                f"{p.chunk_size}: more buckets than positions"
            )
        if p.n_buckets is not None and (p.n_buckets < 2 or p.n_buckets % 2):
            errors.append(f"n_buckets must be even and >= 2, got {p.n_buckets}")
        elif p.n_buckets is not None and p.n_buckets > max(seq_len, 2):
            # the rotations hold n_buckets / 2 columns per head and round
            errors.append(
                f"n_buckets {p.n_buckets} is more than the {seq_len} positions to hash into them"
            )
        return errors

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        return super().not_supported_reasons(inputs) + self.param_errors(inputs.seq_len)

    def shape_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().shape_reasons(inputs)
        if inputs.grouped and self.params.shared_qk:
            # the keys are the queries' unit vectors: one per query head, none to share
            reasons.append(
                f"no grouped-query attention with shared-QK (kv_heads {inputs.kv_heads_count} < "
                f"heads {inputs.heads}): its keys are the unit-normalised queries, one per query "
                "head; --no-shared-qk uses the grouped k input"
            )
        return reasons

    def reference_keys(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The keys, times ``sqrt(D)`` unscaled: the dense reference's ``1/sqrt(D)`` cancels."""
        keys = unit_keys(q) if self.params.shared_qk else k
        return keys * q.shape[-1] ** 0.5 if self.params.unscaled_logits else keys

    def sort_qk(self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rot: torch.Tensor):
        """``perm_q, slot_q, perm_k, slot_k`` ``[B, H, R, Np]`` (``lsh_sort``) of q and the keys."""
        c = self.params.chunk_size
        n_pad = -(-inputs.seq_len // c) * c
        # grouped keys ``[B, Hkv, N, D]`` are hashed with each of their query heads' rotations
        k = expand_heads(k, q.shape[1])  # [B, H, N, D]
        perm_q, slot_q = lsh_sort(q, rot, n_pad, c)
        # shared-QK hashes q once: its keys q / ||q|| have the same angles, hence buckets
        perm_k, slot_k = (perm_q, slot_q) if self.params.shared_qk else lsh_sort(k, rot, n_pad, c)
        return perm_q, slot_q, perm_k, slot_k

    def prepare(self, inputs: Inputs) -> AttentionFn:
        return chunk_attention(self, inputs)

    def pair_counts(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, H, M, N]`` uint8 (at most 2 per round, 64 rounds): in how many window slots,
        over every round, each query of ``rows`` (all when None) meets each key; shared-QK's
        self pair 0 unless it is alone."""
        p, n = self.params, inputs.seq_len
        _, slot_q, _, slot_k = self.sort_qk(inputs, q, k, rotations(inputs, p))
        nc = slot_q.shape[-1] // p.chunk_size
        cross = p.look_back_across_rounds and p.n_hashes > 1 and nc > 1
        keys = torch.arange(n, device=q.device)
        pos = keys if rows is None else rows.to(q.device)
        chunk_q = (slot_q // p.chunk_size).int()[..., pos]  # [B, H, R, M]
        chunk_k = (slot_k // p.chunk_size).int()[..., :n]  # [B, H, R, N]
        counts = torch.zeros(*chunk_q.shape[:2], pos.numel(), n, dtype=torch.uint8, device=q.device)
        for r in range(p.n_hashes):  # r - 1 = -1: the previous round of round 0 is the last
            prev = chunk_k[:, :, r - 1, None, :]
            counts += occurrences(
                chunk_q[:, :, r, :, None], chunk_k[:, :, r, None, :], prev, nc, cross
            )
        if p.shared_qk:
            is_self = pos[:, None] == keys[None, :]  # [M, N]
            alone = ~((counts > 0) & ~is_self).any(dim=-1, keepdim=True)  # [B, H, M, 1]
            counts = counts * (~is_self | alone)
        return counts  # [B, H, M, N]

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.pair_counts(inputs, q, k, rows) > 0  # [B, H, M, N]

    def reference(
        self,
        inputs: Inputs,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        compute_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Softmax under the mask; with ``count_per_round`` the dense mixture of the rounds:
        softmax of ``q k^T / sqrt(D) + log count`` (count 0: not attended)."""
        if not self.params.count_per_round:
            return super().reference(inputs, q, k, v, rows, compute_dtype)
        positions = rows.to(q.device) + inputs.query_offset
        counts = self.pair_counts(inputs, q.detach(), k.detach(), positions)  # [B, H, R, N]
        compute_dtype = reference_dtype(q.device, compute_dtype)
        keys = expand_heads(self.reference_keys(q, k), q.shape[1])  # [B, H, N, D]
        q, keys, v = (
            t.to(compute_dtype) for t in (q[:, :, rows], keys, expand_heads(v, q.shape[1]))
        )
        scores = (q @ keys.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [B, H, R, N]
        return (scores + counts.to(compute_dtype).log()).softmax(dim=-1) @ v  # [B, H, R, D]

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The kernel's peak (``reformer_chunks.chunk_bytes``)."""
        return chunk_bytes(inputs, self.params)
