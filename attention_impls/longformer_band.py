"""Longformer attention for decoding with a KV cache: ``M < N`` queries, the last ``M`` positions
(``harness.measure.inputs``), each attending its own (dilated) window, the global keys and, where
it is global itself, every key. Layout ``[B, H, M, D]`` for q, ``[B, Hkv, N, D]`` for k and v.

The blocked kernel of ``attention_impls.longformer`` computes every position's row; a few queries
at the end need only their own bands, so here the band of each query is gathered: query ``p``
scores keys ``p + d t`` for ``|t| <= w`` (``-w <= t <= 0`` when causal), ``[B, Hkv, M, K, D]``
with ``K = 2w + 1`` (``w + 1``), O(M w) time and memory and never ``M x N`` apart from the dense
rows of global queries. Keys out of range, global keys (left to the global columns, so that no pair
counts twice) and keys of another document are masked in a table built once per shape; every
query keeps itself (in its band or, if global, in its global column), so no softmax row is all
``-inf``. Grouped-query attention: the ``G`` query heads of a key/value head are ``G`` rows
against the same gathered band.
"""

from __future__ import annotations

import torch

from attention_impls.longformer_global import Projections, project
from harness.measure.backend import AttentionFn
from harness.measure.inputs import Inputs


def band_steps(window: int, dilation: int, seq_len: int, causal: bool) -> torch.Tensor:
    """The steps ``t`` of a band ``[K]``; steps reaching past every position are left out."""
    reach = min(window, (seq_len - 1) // dilation)  # |d t| >= N is out of range for every query
    return torch.arange(-reach, (0 if causal else reach) + 1)


def band_attention(
    inputs: Inputs,
    window: int,
    dilation: int,
    gpos: list[int],
    causal: bool,
    proj: Projections | None = None,
) -> AttentionFn:
    """The closure for ``inputs`` (any ``q_len``; meant for ``q_len < seq_len``); ``proj``: the
    global rows' own projections (``attention_impls.longformer_global``), None to reuse q, k, v."""
    n, m, dev = inputs.seq_len, inputs.query_len, torch.device(inputs.device)
    hkv, groups, scale = inputs.kv_heads_count, inputs.heads // inputs.kv_heads_count, inputs.scale
    pos = torch.arange(m, device=dev) + inputs.query_offset  # [M] query positions
    keys = torch.arange(n, device=dev)
    glob = torch.tensor(gpos, dtype=torch.long, device=dev)  # [Gg]
    g = glob.numel()
    is_global = torch.zeros(n, dtype=torch.bool, device=dev)
    is_global[glob] = True

    key = pos[:, None] + dilation * band_steps(window, dilation, n, causal).to(dev)  # [M, K]
    idx = key.clamp(0, n - 1)  # [M, K], masked where clamped
    band_blocked = (key < 0) | (key >= n) | is_global[idx]  # [M, K]
    global_blocked = glob > pos[:, None] if causal else None  # [M, Gg]
    g_rows = glob[glob >= inputs.query_offset] - inputs.query_offset  # query rows that are global
    dense_blocked = keys > pos[g_rows, None] if causal else None  # [Gq, N]
    if inputs.documents > 1:
        doc = inputs.document_ids(dev)  # [N]
        band_blocked |= doc[pos][:, None] != doc[idx]
        cross = doc[pos][:, None] != doc[glob]  # [M, Gg]
        global_blocked = cross if global_blocked is None else global_blocked | cross
        cross = doc[pos[g_rows]][:, None] != doc  # [Gq, N]
        dense_blocked = cross if dense_blocked is None else dense_blocked | cross
    band_blocked = band_blocked[:, None, :]  # [M, 1, K]: the same for the G heads of a group
    if global_blocked is not None:
        global_blocked = global_blocked[:, None, :]  # [M, 1, Gg]
    if dense_blocked is not None:
        dense_blocked = dense_blocked.repeat(groups, 1)  # [G*Gq, N]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, _, dim = q.shape
        q = q * scale
        qg = q.unflatten(1, (hkv, groups)).transpose(2, 3)  # [B, Hkv, M, G, D]
        kb, vb = k[:, :, idx], v[:, :, idx]  # [B, Hkv, M, K, D]
        scores = qg @ kb.transpose(-1, -2)  # [B, Hkv, M, G, K]
        # In place is safe: the matmul's backward needs its inputs, not this output.
        scores.masked_fill_(band_blocked, float("-inf"))
        if g:
            g_scores = qg.reshape(b, hkv, -1, dim) @ k[:, :, glob].transpose(-1, -2)
            g_scores = g_scores.view(b, hkv, m, groups, g)  # [B, Hkv, M, G, Gg]
            if global_blocked is not None:
                g_scores.masked_fill_(global_blocked, float("-inf"))
            probs = torch.cat([scores, g_scores], dim=-1).softmax(dim=-1)  # [.., K + Gg]
            band = probs.shape[-1] - g
            g_probs = probs[..., band:].reshape(b, hkv, -1, g)  # [B, Hkv, M*G, Gg]
            g_out = (g_probs @ v[:, :, glob]).view(b, hkv, m, groups, dim)  # [B, Hkv, M, G, D]
            out = probs[..., :band] @ vb + g_out  # [B, Hkv, M, G, D]
        else:
            out = scores.softmax(dim=-1) @ vb  # [B, Hkv, M, G, D]
        out = out.transpose(2, 3).reshape(b, h, m, dim)  # [B, H, M, D]
        if g_rows.numel():
            rows, kd, vd = q[:, :, g_rows], k, v  # [B, H, Gq, D]; k, v [B, Hkv, N, D]
            if proj is not None:  # the global rows' own projections (q is scaled: linear)
                rows, kd, vd = project(proj, rows, k, v)
            rows = rows.reshape(b, hkv, -1, dim)  # [B, Hkv, G*Gq, D]
            dense = rows @ kd.transpose(-1, -2)  # [B, Hkv, G*Gq, N]
            if dense_blocked is not None:
                dense.masked_fill_(dense_blocked, float("-inf"))
            dense = (dense.softmax(dim=-1) @ vd).view(b, h, -1, dim)  # [B, H, Gq, D]
            out = out.index_copy(2, g_rows, dense)  # [B, H, M, D]
        return out

    return fn


def band_bytes(inputs: Inputs, window: int, dilation: int, globals_: int, causal: bool) -> int:
    """Peak of ``band_attention``'s closure, counted from the tensors it allocates: the scaled q
    and its grouped copy, the gathered keys and values ``[B, Hkv, M, K, D]``, the scores
    ``[B, H, M, K + Gg]`` with their concatenation and softmax, the output; with a backward pass,
    three score tensors in the softmax's gradient beside the saved bands, their gradients and
    the scattered dk, dv."""
    n, m = inputs.seq_len, inputs.query_len
    slots = band_steps(window, dilation, n, causal).numel()
    b, h, hkv, dim = inputs.batch, inputs.heads, inputs.kv_heads_count, inputs.head_dim
    size = inputs.element_size
    queries = b * h * m * dim * size
    bands = b * hkv * m * slots * dim * size
    scores = b * h * m * (slots + globals_) * size
    kv = b * hkv * n * dim * size
    forward = 2 * queries + 2 * bands + 3 * scores + queries
    if not inputs.requires_grad:
        return forward
    return 3 * scores + 4 * bands + 3 * queries + 2 * kv
