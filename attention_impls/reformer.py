"""Reformer LSH attention (Kitaev, Kaiser and Levskaya, 2020, "Reformer: The Efficient
Transformer", ICLR, arXiv:2001.04451, sec. 3).

Layout ``[B, H, N, D]`` as in ``harness.measure.backend``. Pattern, for each of ``n_hashes`` rounds
r:

- angular LSH: with a random rotation ``R_r`` of shape ``[D, n_buckets / 2]`` per head,
  ``bucket(x) = argmax([x R_r ; -x R_r])``. The rotations are standard normal from a generator
  seeded with ``inputs.seed``, drawn once in ``prepare``; ``mask`` draws the same ones.
  ``n_buckets`` defaults to ``max(2, 2 * round(N / (2 * chunk_size)))``, about one chunk per
  bucket as in the paper.
- tokens are sorted by (bucket, position) and the sorted order is cut into chunks of
  ``chunk_size`` c. Query chunk i attends key chunks i and i - 1, wrapping around (the previous
  chunk of chunk 0 is the last chunk); when there is only one chunk it attends itself only.
  This rule is ``meets``, the one definition that ``mask``, the kernel here and flex-reformer
  (``attention_impls.flex_reformer``) follow; the hashing and sort are ``attention_impls.lsh``.
- grouped-query attention (without shared-QK): every query head hashes and sorts the keys of its
  key/value head with its own rotations, so k and v are repeated to the ``H`` query heads first.
- ``shared_qk`` (the paper's setting): the keys are the unit-normalised queries
  ``q / ||q||`` (the k input is ignored), queries and keys share one sort, and a token does not
  attend to itself unless it has no other key. Without it, q and k are hashed with the same
  rotations and sorted separately.

Merging the rounds: each round gives a chunk-softmax output and its log-sum-exp; the rounds are
weighted by the softmax of those log-sum-exps, and every pair's score is lowered by the log of
the number of rounds in which the pair meets, so that a pair met in several rounds counts once.
The output is therefore exactly dense softmax attention over the union of all rounds'
neighbourhoods, which is what ``mask`` returns.

Lengths that c does not divide are padded to a multiple of it: padded tokens get the extra
bucket id ``n_buckets`` so they sort to the end, padded keys are masked with -inf and padded query
rows are dropped. Memory is O(B H n_hashes N c) for the chunk scores, which bound the hashing's
too; nothing is N x N. Hashing time does grow as N^2 D / c, since the default bucket count
follows N: sweeps show it at long lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from attention_impls.footprint import rows_bytes
from attention_impls.lsh import lsh_sort, rotations
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import param
from harness.measure.registry import register
from harness.store.facts import Promise
from harness.store.limits import MAX_HASHES


@dataclass(frozen=True)
class ReformerParams:
    n_hashes: int = param(4, "--hashes", "hash rounds", low=1)
    n_buckets: int | None = param(
        None, "--buckets", "buckets, even (default: max(2, 2 round(N / 2c)), about N / c)", low=1
    )
    chunk_size: int = param(64, "--chunk-size", "chunk size c", low=1)
    shared_qk: bool = param(
        True, "--no-shared-qk", "hash separate keys instead of the unit-normalised queries"
    )


def unit_keys(q: torch.Tensor) -> torch.Tensor:
    """The shared-QK keys ``q / ||q||`` (zero rows, such as padding, stay zero instead of NaN)."""
    return F.normalize(q, dim=-1)


def meets(chunk_q: torch.Tensor, chunk_k: torch.Tensor, n_chunks: int | torch.Tensor):
    """Whether a query in sorted chunk ``chunk_q`` attends the keys in chunk ``chunk_k`` (chunk
    ids of one round, broadcast; ``n_chunks`` chunks): the key's chunk is the query's or the one
    before it, wrapping (chunk 0's previous chunk is the last; one chunk attends itself)."""
    return (chunk_q - chunk_k + n_chunks) % n_chunks <= 1


def _window(x: torch.Tensor) -> torch.Tensor:
    """Chunked ``[B, H, R, nc, c, ...]`` to windows: own chunk, then the previous one (the
    chunks that ``meets`` the queries of a chunk, gathered)."""
    if x.shape[3] == 1:  # a single chunk is its own previous chunk: attend it once
        return x
    return torch.cat([x, x.roll(1, dims=3)], dim=4)  # [B, H, R, nc, 2c, ...]


def expand_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, Hkv, N, D]`` -> ``[B, H, N, D]``: key/value head g for query heads g*G .. g*G+G-1."""
    groups = heads // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


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
        return unit_keys(q) if self.params.shared_qk else k

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
        b, h, n, d = inputs.shape
        c, rounds, shared = self.params.chunk_size, self.params.n_hashes, self.params.shared_qk
        n_pad = -(-n // c) * c
        nc = n_pad // c
        w = c if nc == 1 else 2 * c
        scale, dtype, device = inputs.scale, inputs.dtype, torch.device(inputs.device)
        rot = rotations(inputs, self.params)  # [H, D, R, n_buckets / 2]
        # offsets turning per-(b, h) and per-(b, h, r) row indices into flat row indices
        offset_bh = (torch.arange(b * h, device=device) * n_pad).view(b, h, 1, 1, 1)
        offset_bhr = (torch.arange(b * h * rounds, device=device) * n_pad).view(b, h, rounds, 1)
        self_bias = None
        if shared:
            # own chunk comes first in each window, in query order: self pairs are its diagonal;
            # finite, so a token with no other key still attends itself
            eye = torch.eye(c, w, dtype=torch.bool, device=device)  # [c, w]
            big_neg = torch.finfo(dtype).min / 2
            self_bias = torch.zeros(c, w, dtype=dtype, device=device).masked_fill(eye, big_neg)

        def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            """Rows ``idx`` ``[B, H, R, nc, m]`` of ``x`` ``[B, H, Np, D]``."""
            flat = (idx + offset_bh).flatten()  # [B * H * R * nc * m]
            return x.reshape(-1, d).index_select(0, flat).view(*idx.shape, d)

        def bias_for(perm_q, slot_q, kidx, slot_k) -> torch.Tensor | None:
            """Additive score bias: -log(rounds the pair meets in), self and padding masks.

            Either a fresh ``[B, H, R, nc, c, w]`` tensor or one that broadcasts to it.
            """
            bias = self_bias  # [c, w] or None
            pad_key = (kidx >= n).unsqueeze(-2) if n_pad > n else None  # [B, H, R, nc, 1, w]
            # with one or two chunks every pair meets in every round: a constant count cancels
            if rounds > 1 and nc > 2:
                chunk_q = (slot_q // c).int()  # [B, H, R, Np] token -> chunk
                chunk_k = (slot_k // c).int()  # [B, H, R, Np]
                count = torch.ones(b, h, rounds, nc, c, w, dtype=torch.uint8, device=device)
                hit = torch.empty(count.shape, dtype=torch.bool, device=device)  # reused
                for shift in range(1, rounds):  # a pair meets in its own round: start from 1
                    # chunk, in round r + shift, of the queries and keys of round r's windows
                    cq = chunk_q.roll(-shift, dims=2).gather(-1, perm_q)  # [B, H, R, Np]
                    cq = cq.view(b, h, rounds, nc, c, 1)
                    ck = chunk_k.roll(-shift, dims=2).gather(-1, kidx.flatten(3))  # [B, H, R, nc*w]
                    ck = ck.view(b, h, rounds, nc, 1, w)
                    # meets(cq, ck, nc), as two comparisons into one reused buffer: the key's
                    # chunk is the query's, or the query's is the one after the key's (different
                    # chunks as nc > 2); meets would allocate [B, H, R, nc, c, w] int tensors.
                    # A bool viewed as uint8 adds without a copy.
                    count += torch.eq(cq, ck, out=hit).view(torch.uint8)  # [B, H, R, nc, c, w]
                    count += torch.eq(cq, (ck + 1) % nc, out=hit).view(torch.uint8)
                bias = count.to(dtype).log_().neg_()  # [B, H, R, nc, c, w]
                if self_bias is not None:
                    bias += self_bias
                if pad_key is not None:
                    bias.masked_fill_(pad_key, float("-inf"))
            elif pad_key is not None:
                pad_bias = torch.zeros(pad_key.shape, dtype=dtype, device=device)
                pad_bias.masked_fill_(pad_key, float("-inf"))  # [B, H, R, nc, 1, w]
                bias = pad_bias if bias is None else bias + pad_bias  # [B, H, R, nc, c, w]
            return bias

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # every query head sorts the keys by its own hashes: a copy per head (O(N))
            k, v = expand_heads(k, h), expand_heads(v, h)  # [B, H, N, D]
            perm_q, slot_q, perm_k, slot_k = self.sort_qk(inputs, q, k, rot)
            qidx = perm_q.view(b, h, rounds, nc, c)  # [B, H, R, nc, c]
            kidx = _window(perm_k.view(b, h, rounds, nc, c))  # [B, H, R, nc, w]
            with torch.no_grad():
                bias = bias_for(perm_q, slot_q, kidx, slot_k)
            pad = (0, 0, 0, n_pad - n)
            keys = unit_keys(q) if shared else k
            qs = gather(F.pad(q * scale, pad), qidx).view(-1, c, d)  # [B * H * R * nc, c, D]
            kt = gather(F.pad(keys, pad), kidx).view(-1, w, d).transpose(-1, -2)  # [., D, w]
            vw = gather(F.pad(v, pad), kidx).view(-1, w, d)  # [B * H * R * nc, w, D]
            if bias is None:
                scores = torch.bmm(qs, kt)  # [B * H * R * nc, c, w]
            elif bias.dim() == 6 and bias.shape[-2] == c:  # fresh and full: accumulate into it
                scores = bias.view(-1, c, w).baddbmm_(qs, kt)  # [B * H * R * nc, c, w]
            else:
                scores = torch.baddbmm(bias.reshape(-1, *bias.shape[-2:]), qs, kt)
            # softmax normalised after the product with v: divides c x D, not c x w, numbers
            # in place: each large allocation costs page faults on the CPU, and no backward
            # formula needs the scores themselves
            top = scores.detach().amax(dim=-1, keepdim=True)  # [B * H * R * nc, c, 1]
            e = scores.sub_(top).exp_()  # [B * H * R * nc, c, w]
            total = e.sum(dim=-1, keepdim=True)  # [B * H * R * nc, c, 1]
            out = torch.bmm(e, vw) / total  # [B * H * R * nc, c, D]
            # back to token order, real query rows only
            idx = (slot_q[..., :n] + offset_bhr).flatten()  # [B * H * R * N]
            out = out.reshape(-1, d).index_select(0, idx).view(b, h, rounds, n, d)
            if rounds == 1:
                return out[:, :, 0]  # [B, H, N, D]
            lse = (total.log() + top).reshape(-1).index_select(0, idx).view(b, h, rounds, n, 1)
            return (out * lse.softmax(dim=2)).sum(dim=2)  # [B, H, N, D]

        return fn

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, c = inputs.seq_len, self.params.chunk_size
        rot = rotations(inputs, self.params)
        _, slot_q, _, slot_k = self.sort_qk(inputs, q, k, rot)
        nc = slot_q.shape[-1] // c
        keys = torch.arange(n, device=q.device)
        pos = keys if rows is None else rows.to(q.device)
        chunk_q = (slot_q // c).int()[..., pos]  # [B, H, R, M]
        chunk_k = (slot_k // c).int()[..., :n]  # [B, H, R, N]
        attend = torch.zeros(*chunk_q.shape[:2], pos.numel(), n, dtype=torch.bool, device=q.device)
        for r in range(chunk_q.shape[2]):
            rows_r, keys_r = chunk_q[:, :, r, :, None], chunk_k[:, :, r, None, :]
            attend |= meets(rows_r, keys_r, nc)  # [B, H, M, N]
        if self.params.shared_qk:
            is_self = pos[:, None] == keys[None, :]  # [M, N]
            alone = ~(attend & ~is_self).any(dim=-1, keepdim=True)  # [B, H, M, 1]
            attend &= ~is_self | alone
        return attend  # [B, H, M, N]

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Peak of ``fn``, counted from the tensors it allocates.

        ``C``: chunk scores ``[B, H, R, nc, c, w]``; ``V``: one row per token and round
        ``[B, H, R, Np, D]`` (q gathered into chunks is one ``V``, the keys and values of the
        windows two each); int64 index tables (sort order, slots, window keys, gather indices).

        - forward: ``C`` beside the gathered q, keys and values, the product with v and its
          normalised copy (or, with several rounds, the rows back in token order and their
          weighted copy, then the merged output), and the shared-QK unit keys; with grouped
          query heads, k and v repeated to every query head (their gradients in the backward).
        - backward: the larger of two moments. In the normalisation's gradient: ``C`` (saved
          exponentials), the six saved ``V`` (gathered q, keys, values, product with v), the
          gradient in chunk order and four ``V`` of the division's backward. In the
          exponential's gradient: the gathered q and keys and v's gradient beside three ``C``
          (exponentials, their gradient and its product), five when the scores were computed
          in place in a view of the fresh count bias (several rounds over more than two chunks):
          autograd's ``CopySlices`` then clones the gradient and allocates the base's.
        """
        b, h, n, _ = inputs.shape
        p = self.params
        c, rounds = p.chunk_size, p.n_hashes
        n_pad = -(-n // c) * c
        nc = n_pad // c
        w = c if nc == 1 else 2 * c
        tokens = b * h * rounds * n_pad
        chunk_scores = rows_bytes(inputs, rounds * n_pad, w)  # C
        rows = rows_bytes(inputs, rounds * n_pad)  # V
        vec = rows_bytes(inputs, n)
        indices = (4 + w // c) * tokens * 8
        expanded = 2 * vec if inputs.grouped else 0  # k and v repeated (or their gradients)
        keys = (vec if p.shared_qk else 0) + expanded
        if not inputs.requires_grad:
            merged = vec if rounds > 1 else 0
            return chunk_scores + 7 * rows + keys + merged + indices
        in_view = rounds > 1 and nc > 2
        division = chunk_scores + 11 * rows
        exponential = (5 if in_view else 3) * chunk_scores + 5 * rows
        return max(division, exponential) + vec + indices + expanded
