"""The plain ``reformer`` kernel: Reformer's LSH attention (``attention_impls.reformer``; Kitaev,
Kaiser and Levskaya, 2020, arXiv:2001.04451, sec. 3) over sorted chunks. Layout ``[B, H, N, D]``
as in ``harness.measure.backend``.

1. Hash and sort (``Reformer.sort_qk``): every round's tokens in (bucket, position) order, cut
   into ``nc`` chunks of ``c``.
2. Windows: each query chunk gathers its own chunk's keys and the previous chunk's, ``2c`` (one
   chunk: itself only). The previous chunk is its own round's (chunk 0's is the round's last),
   or with ``--look-back-across-rounds`` the previous one of all rounds laid end to end (chunk
   0's is the previous round's last: HF's and trax's layout).
3. Scores ``[B, H, R, nc, c, w]`` plus an additive bias built without gradient: shared-QK's self
   mask (a large finite negative, so that a token with no other key still attends itself; by
   position on the diagonal of its own chunk, or by token where the look-back crosses rounds,
   since a token may then sit twice in one window), ``-inf`` for padded keys and, counting each
   pair once (the paper's ``-log N_ij``), ``-log count`` with ``count`` the slots, over every
   round's window of the query, that hold the key.
4. Softmax per round, normalised after the product with v; the rounds merged by the softmax
   of their log-sum-exps.

Memory is O(B H R N c) for the chunk scores and the bias, nothing N x N.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from attention_impls.footprint import rows_bytes
from attention_impls.lsh import rotations, unit_keys
from harness.measure.backend import AttentionFn
from harness.measure.inputs import Inputs, expand_heads

if TYPE_CHECKING:  # the family's module imports this one
    from attention_impls.reformer import Reformer, ReformerParams


def modes(params: ReformerParams, n_chunks: int) -> tuple[bool, bool]:
    """``(cross, counted)``: whether the look-back crosses rounds here (it changes nothing with
    one round or one chunk), and whether pairs need a count bias (counted once, over several
    rounds, unless every pair meets in every round the same way: one or two chunks of one
    round's own)."""
    rounds = params.n_hashes
    cross = params.look_back_across_rounds and rounds > 1 and n_chunks > 1
    counted = not params.count_per_round and rounds > 1 and (n_chunks > 2 or cross)
    return cross, counted


def windows(x: torch.Tensor, cross: bool) -> torch.Tensor:
    """Chunked ``[B, H, R, nc, c]`` to windows ``[B, H, R, nc, w]``: own chunk, then the previous
    one, of the own round or, ``cross``, of all rounds end to end."""
    if x.shape[3] == 1:  # a single chunk is its own previous chunk: attend it once
        return x
    # across rounds, [B, H, R*nc, c] rolled: chunk 0 of round r gets round r-1's last
    previous = x.flatten(2, 3).roll(1, dims=2).view_as(x) if cross else x.roll(1, dims=3)
    return torch.cat([x, previous], dim=4)  # [B, H, R, nc, 2c]


def count_bias(
    slot_q: torch.Tensor,
    slot_k: torch.Tensor,
    perm_q: torch.Tensor,
    kidx: torch.Tensor,
    c: int,
    cross: bool,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``-log count`` ``[B, H, R, nc, c, w]`` for the windows ``kidx`` ``[B, H, R, nc, w]``:
    ``count`` is the number of slots, over every round's window of the query, holding the key
    (``Reformer.pair_counts``' rule, per slot)."""
    b, h, rounds, nc, w = kidx.shape
    chunk_q, chunk_k = (slot_q // c).int(), (slot_k // c).int()  # [B, H, R, Np] token -> chunk
    keys = kidx.flatten(3)  # [B, H, R, nc*w]
    # own round, over more than two chunks: this slot is the key's one place in its round
    count = torch.full((b, h, rounds, nc, c, w), 0 if cross else 1, dtype=torch.uint8,
                       device=kidx.device)  # fmt: skip
    hit = torch.empty(count.shape, dtype=torch.bool, device=kidx.device)  # reused
    for shift in range(0 if cross else 1, rounds):
        # chunk, in round r + shift, of the queries and keys of round r's windows
        cq = chunk_q.roll(-shift, dims=2).gather(-1, perm_q).view(b, h, rounds, nc, c, 1)
        ck = chunk_k.roll(-shift, dims=2).gather(-1, keys).view(b, h, rounds, nc, 1, w)
        # comparisons into one reused buffer (a bool viewed as uint8 adds without a copy):
        # meets() would allocate [B, H, R, nc, c, w] int tensors
        count += torch.eq(cq, ck, out=hit).view(torch.uint8)  # the query's chunk
        if cross:  # the chunk before, in its round; chunk 0's: the previous round's last
            count += torch.eq(cq, ck + 1, out=hit).view(torch.uint8)
            ck_prev = chunk_k.roll(1 - shift, dims=2).gather(-1, keys).view_as(ck)
            count += torch.logical_and(cq == 0, ck_prev == nc - 1, out=hit).view(torch.uint8)
        else:  # the chunk before, wrapping (different chunks as nc > 2)
            count += torch.eq(cq, (ck + 1) % nc, out=hit).view(torch.uint8)
    return count.to(dtype).log_().neg_()  # [B, H, R, nc, c, w]


def chunk_attention(backend: Reformer, inputs: Inputs) -> AttentionFn:
    """The closure of ``backend`` (its parameters and sort) for ``inputs``."""
    b, h, n, d = inputs.shape
    p = backend.params
    c, rounds, shared = p.chunk_size, p.n_hashes, p.shared_qk
    n_pad = -(-n // c) * c
    nc = n_pad // c
    w = c if nc == 1 else 2 * c
    cross, counted = modes(p, nc)
    scale = 1.0 if p.unscaled_logits else inputs.scale
    dtype, device = inputs.dtype, torch.device(inputs.device)
    rot = rotations(inputs, p)  # [H, D, R, n_buckets / 2]
    # offsets turning per-(b, h) and per-(b, h, r) row indices into flat row indices
    offset_bh = (torch.arange(b * h, device=device) * n_pad).view(b, h, 1, 1, 1)
    offset_bhr = (torch.arange(b * h * rounds, device=device) * n_pad).view(b, h, rounds, 1)
    big_neg = torch.finfo(dtype).min / 2  # finite: a token with no other key attends itself
    self_bias = None
    if shared and not cross:
        # own chunk comes first in each window, in query order: self pairs are its diagonal
        eye = torch.eye(c, w, dtype=torch.bool, device=device)  # [c, w]
        self_bias = torch.zeros(c, w, dtype=dtype, device=device).masked_fill(eye, big_neg)

    def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` ``[B, H, R, nc, m]`` of ``x`` ``[B, H, Np, D]``."""
        flat = (idx + offset_bh).flatten()  # [B * H * R * nc * m]
        return x.reshape(-1, d).index_select(0, flat).view(*idx.shape, d)

    def bias_for(perm_q, slot_q, qidx, kidx, slot_k) -> torch.Tensor | None:
        """Additive score bias: -log(count), self and padding masks; either a fresh
        ``[B, H, R, nc, c, w]`` tensor or one that broadcasts to it."""
        pad_key = (kidx >= n).unsqueeze(-2) if n_pad > n else None  # [B, H, R, nc, 1, w]
        full = count_bias(slot_q, slot_k, perm_q, kidx, c, cross, dtype) if counted else None
        if shared and cross:  # a token may sit twice in a window: found by token
            is_self = qidx.unsqueeze(-1) == kidx.unsqueeze(-2)  # [B, H, R, nc, c, w]
            if full is None:
                full = torch.zeros(is_self.shape, dtype=dtype, device=device)
            full.masked_fill_(is_self, big_neg)
        if full is not None:
            if self_bias is not None:
                full += self_bias
            if pad_key is not None:
                full.masked_fill_(pad_key, float("-inf"))
            return full  # [B, H, R, nc, c, w]
        if pad_key is None:
            return self_bias  # [c, w] or None
        pad_bias = torch.zeros(pad_key.shape, dtype=dtype, device=device)
        pad_bias.masked_fill_(pad_key, float("-inf"))  # [B, H, R, nc, 1, w]
        return pad_bias if self_bias is None else pad_bias + self_bias  # [B, H, R, nc, c, w]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # every query head sorts the keys by its own hashes: a copy per head (O(N))
        k, v = expand_heads(k, h), expand_heads(v, h)  # [B, H, N, D]
        perm_q, slot_q, perm_k, slot_k = backend.sort_qk(inputs, q, k, rot)
        qidx = perm_q.view(b, h, rounds, nc, c)  # [B, H, R, nc, c]
        kidx = windows(perm_k.view(b, h, rounds, nc, c), cross)  # [B, H, R, nc, w]
        with torch.no_grad():
            bias = bias_for(perm_q, slot_q, qidx, kidx, slot_k)
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


def chunk_bytes(inputs: Inputs, params: ReformerParams) -> int:
    """Peak of ``chunk_attention``'s closure, counted from the tensors it allocates.

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
      in place in a view of a fresh bias (a count bias, or shared-QK's self mask by token
      across rounds): autograd's ``CopySlices`` then clones the gradient and allocates the
      base's.
    """
    b, h, n, _ = inputs.shape
    c, rounds = params.chunk_size, params.n_hashes
    n_pad = -(-n // c) * c
    nc = n_pad // c
    w = c if nc == 1 else 2 * c
    tokens = b * h * rounds * n_pad
    chunk_scores = rows_bytes(inputs, rounds * n_pad, w)  # C
    rows = rows_bytes(inputs, rounds * n_pad)  # V
    vec = rows_bytes(inputs, n)
    indices = (4 + w // c) * tokens * 8
    expanded = 2 * vec if inputs.grouped else 0  # k and v repeated (or their gradients)
    keys = (vec if params.shared_qk else 0) + expanded
    if not inputs.requires_grad:
        merged = vec if rounds > 1 else 0
        return chunk_scores + 7 * rows + keys + merged + indices
    cross, counted = modes(params, nc)
    in_view = counted or (cross and params.shared_qk)
    division = chunk_scores + 11 * rows
    exponential = (5 if in_view else 3) * chunk_scores + 5 * rows
    return max(division, exponential) + vec + indices + expanded
