"""The plain ``longformer`` kernel: Longformer's pattern (``attention_impls.longformer``;
Beltagy, Peters and Cohan, 2020, arXiv:2004.05150, section 3.1) blocked, O(N w) time and memory,
never an N x N tensor. Layout ``[B, H, N, D]`` as in ``harness.measure.backend``.

- Dilation: positions congruent mod ``d`` form ``d`` interleaved classes; within a class the
  dilated window is an ordinary window of ``w`` class neighbours, so the class is a batch dim.
- Window: each class is cut into blocks of ``bs = w`` positions (``bs = class length - 1`` when
  the class is shorter than the window: it covers the whole class either way). Query block ``I``
  scores key blocks ``I-1, I, I+1`` (``I-1, I`` when causal, as block ``I+1`` is all future) and a
  mask precomputed once per shape keeps ``|i - j| <= d w``, causality, and drops global keys.
- Global keys are extra score columns for every query; one softmax runs over window and global
  columns together, so each pair counts once.
- Global queries attend every key densely (``[.., G, N]`` scores; with separate global
  projections over ``q Wq``, ``k Wk``, ``v Wv``: ``attention_impls.longformer_global``) and
  replace their output rows out of place (``index_copy``), which keeps autograd intact.
- Grouped-query attention: the ``G`` query heads of a key/value head are stacked as ``G * bs``
  rows of each query block (``attention_impls.grouped``), so k and v are never repeated.
- Packed documents: the precomputed masks also drop the pairs of different documents.

Padding: ``N`` is padded with zeros to ``d * nb * bs`` (whole classes of whole blocks); padded keys
are masked with ``-inf`` and padded query rows are dropped from the output. No softmax row is all
``-inf`` (its NaN would leak into real gradients): a real query keeps itself or, if global, its
global column; a class holds at most ``bs <= w`` padded slots, so a padded query is within ``w``
of a real key, kept in the window or in the global columns (never causally blocked there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from attention_impls.footprint import rows_bytes
from attention_impls.grouped import fold_groups, fold_mask, kv_share, other_document, unfold_groups
from attention_impls.longformer_global import Projections, project
from harness.measure.backend import AttentionFn
from harness.measure.inputs import Inputs

if TYPE_CHECKING:  # the family's module imports this one
    from attention_impls.longformer import LongformerParams


def _layout(params: LongformerParams, n: int) -> tuple[int, int, int]:
    """Classes ``d``, block size ``bs`` and blocks per class ``nb`` for length ``n``."""
    # A dilation >= n leaves one position per class: the same pattern as d = n, less padding.
    d = min(params.dilation, n)
    class_len = -(-n // d)
    # A window reaching past the class ends covers the whole class: smaller blocks, same pattern.
    bs = max(1, min(params.window, class_len - 1))
    return d, bs, -(-class_len // bs)


def blocked_attention(
    inputs: Inputs, p: LongformerParams, gpos_list: list[int], proj: Projections | None
) -> AttentionFn:
    """The closure for ``inputs`` (``q_len == seq_len``), global positions ``gpos_list``;
    ``proj``: the global rows' own projections, None to reuse q, k, v."""
    n, scale, dev = inputs.seq_len, inputs.scale, torch.device(inputs.device)
    d, bs, nb = _layout(p, n)
    n_pad = d * nb * bs
    before, after = 1, 0 if p.causal else 1  # neighbour key blocks on each side
    ks = (before + 1 + after) * bs  # key slots per query block
    hkv, groups = inputs.kv_heads_count, inputs.heads // inputs.kv_heads_count
    gpos = torch.tensor(gpos_list, dtype=torch.long, device=dev)
    g = gpos.numel()
    is_global = torch.zeros(n_pad, dtype=torch.bool, device=dev)
    is_global[gpos] = True

    # Class index r and sequence position c + d*r of every query slot and key slot.
    r_q = torch.arange(nb * bs, device=dev).view(nb, bs)  # [nb, bs]
    blocks = torch.arange(nb, device=dev)[:, None]
    r_k = (blocks - before) * bs + torch.arange(ks, device=dev)  # [nb, ks]
    cls = torch.arange(d, device=dev)[:, None, None]
    q_pos = cls + d * r_q  # [d, nb, bs]
    k_pos = cls + d * r_k  # [d, nb, ks]
    dist = r_k[:, None, :] - r_q[:, :, None]  # [nb, bs, ks]
    in_window = dist.abs() <= p.window  # [nb, bs, ks]
    if p.causal:
        in_window &= dist <= 0
    # Global keys are left to the global columns so that no pair is counted twice.
    k_ok = (r_k >= 0) & (k_pos < n) & ~is_global[k_pos.clamp(0, n_pad - 1)]  # [d, nb, ks]
    window_blocked = ~(in_window & k_ok[:, :, None, :])  # [d, nb, bs, ks]
    docs = other_document(inputs, q_pos[..., None], k_pos[:, :, None, :], n_pad)
    if docs is not None:
        window_blocked |= docs
    global_blocked = None  # global columns [d, nb, bs, G]
    dense_blocked = None  # global rows [G, N]
    if p.causal and g:
        global_blocked = gpos > q_pos[..., None]  # [d, nb, bs, G]
        dense_blocked = torch.arange(n, device=dev) > gpos[:, None]  # [G, N]
    if g and inputs.documents > 1:
        # a global token is global within its own document only (``reference_mask``)
        cross = other_document(inputs, q_pos[..., None], gpos, n_pad)  # [d, nb, bs, G]
        global_blocked = cross if global_blocked is None else global_blocked | cross
        cross = other_document(inputs, gpos[:, None], torch.arange(n, device=dev), n_pad)
        dense_blocked = cross if dense_blocked is None else dense_blocked | cross  # [G, N]
    # one mask row per query row of each of the G query heads folded into a block
    window_blocked = fold_mask(window_blocked, groups)  # [d, nb, G*bs, ks]
    global_blocked = fold_mask(global_blocked, groups)  # [d, nb, G*bs, G]
    dense_blocked = fold_mask(dense_blocked, groups)  # [G*G, N]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, _, dim = q.shape
        q = q * scale  # scaling q is cheaper than scaling the [.., ks + G] scores

        def to_classes(x: torch.Tensor, front: int = 0, back: int = 0) -> torch.Tensor:
            heads = x.shape[1]
            # Prepending d*bs zeros shifts every class by one block and keeps each class.
            pad = (0, 0, front * d * bs, n_pad - n + back * d * bs)
            x = F.pad(x, pad) if any(pad) else x  # [B, h, d*(nb+front+back)*bs, D]
            x = x.view(b, heads, -1, d, dim).transpose(2, 3)  # [B, h, d, (nb+f+b)*bs, D]
            return x.reshape(b, heads, d, nb + front + back, bs, dim)  # [.., nb+f+b, bs, D]

        def neighbours(x: torch.Tensor) -> torch.Tensor:
            x = to_classes(x, before, after)  # [B, Hkv, d, nb+before+after, bs, D]
            shifted = [x[:, :, :, s : s + nb] for s in range(before + 1 + after)]
            return torch.cat(shifted, dim=-2)  # [B, Hkv, d, nb, ks, D]

        # The G query heads of a key/value head are G*bs rows of each query block.
        qc = fold_groups(to_classes(q), hkv).contiguous()  # [B, Hkv, d, nb, G*bs, D]
        vn = neighbours(v)  # [B, Hkv, d, nb, ks, D]
        scores = qc @ neighbours(k).transpose(-1, -2)  # [B, Hkv, d, nb, G*bs, ks]
        # In place is safe: the matmul's backward needs its inputs, not this output.
        scores.masked_fill_(window_blocked, float("-inf"))
        if g:
            qflat = qc.view(b, hkv, -1, dim)  # [B, Hkv, n_pad*G, D]
            g_scores = qflat @ k[:, :, gpos].transpose(-1, -2)  # [B, Hkv, n_pad*G, G]
            g_scores = g_scores.view(*qc.shape[:-1], g)  # [B, Hkv, d, nb, G*bs, G]
            if global_blocked is not None:
                g_scores.masked_fill_(global_blocked, float("-inf"))
            probs = torch.cat([scores, g_scores], dim=-1).softmax(dim=-1)
            g_probs = probs[..., ks:].reshape(b, hkv, -1, g)  # [B, Hkv, n_pad*G, G]
            g_out = (g_probs @ v[:, :, gpos]).view(qc.shape)  # [B, Hkv, d, nb, G*bs, D]
            out = probs[..., :ks] @ vn + g_out  # [B, Hkv, d, nb, G*bs, D]
        else:
            out = scores.softmax(dim=-1) @ vn  # [B, Hkv, d, nb, G*bs, D]
        out = unfold_groups(out, groups)  # [B, H, d, nb, bs, D]
        out = out.reshape(b, h, d, nb * bs, dim).transpose(2, 3)  # [B, H, nb*bs, d, D]
        out = out.reshape(b, h, n_pad, dim)[:, :, :n]  # [B, H, N, D]
        if g:
            rows, kd, vd = q[:, :, gpos], k, v  # [B, H, G, D]; k, v [B, Hkv, N, D]
            if proj is not None:  # the global rows' own projections (q is scaled: linear)
                rows, kd, vd = project(proj, rows, k, v)
            rows = rows.reshape(b, hkv, -1, dim)  # [B, Hkv, G*G, D]
            dense = rows @ kd.transpose(-1, -2)  # [B, Hkv, G*G, N]
            if dense_blocked is not None:
                dense.masked_fill_(dense_blocked, float("-inf"))
            dense = (dense.softmax(dim=-1) @ vd).view(b, h, g, dim)  # [B, H, G, D]
            out = out.index_copy(2, gpos, dense)  # [B, H, N, D]
        return out

    return fn


def blocked_bytes(inputs: Inputs, p: LongformerParams, g: int) -> int:
    """Peak of ``blocked_attention``'s closure with ``g`` global positions, counted from the
    tensors it allocates.

    ``S``: the window scores ``[B, H, d, nb, bs, ks]``; ``S_all``: window and global columns
    (``S`` plus ``[B, H, n_pad, G]``); ``nbr``: one neighbour copy ``[B, Hkv, d, nb, ks, D]``;
    ``q``: the scaled q, and its class-major copy where dilation, padding or grouped query
    heads make one.

    - forward: q, v's neighbours (k's are freed after its matmul), ``S`` and its softmax and
      the output; with globals, ``S``, the global scores, their concatenation and its softmax.
    - backward, in the softmax's gradient: the saved softmax, its gradient and the scores'
      gradient (three ``S_all``; without globals the first two are the window's ``S``),
      beside the saved q and k neighbours, v's neighbour gradient and the output; with
      globals also the dense rows' gradients (index_copy's, dq, dk, dv) computed first.
    """
    n = inputs.seq_len
    d, bs, nb = _layout(p, n)
    n_pad = d * nb * bs
    ks = (2 if p.causal else 3) * bs
    share = kv_share(inputs)  # k and v have Hkv heads, q and the scores H
    vec = rows_bytes(inputs, n)
    # the class-major q (a copy where dilation, padding or query-head groups make one)
    q_copy = rows_bytes(inputs, n_pad) if d > 1 or n_pad > n or inputs.grouped else 0
    nbr = int(rows_bytes(inputs, d * nb * ks) * share)
    scores = rows_bytes(inputs, n_pad, ks)
    glob = rows_bytes(inputs, n_pad, g)
    scores_all = scores + glob
    if g:
        forward = vec + q_copy + nbr + scores + glob + 2 * scores_all
    else:
        forward = vec + q_copy + nbr + 2 * scores + vec
    if not inputs.requires_grad:
        return forward
    saved_q = q_copy or vec
    kv = int(vec * share)
    backward = 3 * scores_all + saved_q + 2 * nbr + vec + (2 * vec + 2 * kv if g else 0)
    return max(forward + nbr, backward)
