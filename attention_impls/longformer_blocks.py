"""The plain ``longformer`` kernel: Longformer's pattern (``attention_impls.longformer``;
Beltagy, Peters and Cohan, 2020, arXiv:2004.05150, section 3.1) blocked, O(N w) time and memory,
never an N x N tensor. Layout ``[B, H, N, D]`` as in ``harness.measure.backend``.

- Dilation: positions congruent mod ``d`` form ``d`` interleaved classes; within a class the
  dilated window is an ordinary window of ``w`` class neighbours, so the class is a batch dim.
- Window: each class is cut into blocks of ``bs = w`` positions (``bs = class length - 1`` when
  the class is shorter than the window: it covers the whole class either way). Query block ``I``
  scores key blocks ``I-1, I, I+1`` (``I-1, I`` when causal, as block ``I+1`` is all future) and a
  mask precomputed once per shape keeps ``|i - j| <= d w``, causality, and drops global keys.
- Global keys are extra key slots of every query block; one softmax runs over window and global
  slots together, so each pair counts once. The softmax is ``scaled_dot_product_attention``
  with the boolean mask over the slots: its fused CPU kernel ran the forward and backward about
  2x faster than explicit ``q k^T``, ``masked_fill``, ``softmax``, ``@ v`` (4K and 16K tokens,
  window 256), and no ``[.., bs, ks]`` score tensor is kept.
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

from attention_impls.footprint import cpu_flash_buffers_bytes, rows_bytes
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
    # SDPA's boolean mask over the key slots of each block: the window's, then the global ones
    keep = ~window_blocked
    if g:
        if global_blocked is None:
            keep_global = torch.ones(*keep.shape[:-1], g, dtype=torch.bool, device=dev)
        else:
            keep_global = ~global_blocked  # [d, nb, G*bs, G]
        keep = torch.cat([keep, keep_global], dim=-1)  # [d, nb, G*bs, ks + G]
    keep = keep.reshape(1, d * nb, *keep.shape[-2:])  # [1, d*nb, G*bs, ks (+ G)]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, _, dim = q.shape

        def to_classes(x: torch.Tensor, front: int = 0, back: int = 0) -> torch.Tensor:
            heads = x.shape[1]
            # Prepending d*bs zeros shifts every class by one block and keeps each class.
            pad = (0, 0, front * d * bs, n_pad - n + back * d * bs)
            x = F.pad(x, pad) if any(pad) else x  # [B, h, d*(nb+front+back)*bs, D]
            x = x.view(b, heads, -1, d, dim).transpose(2, 3)  # [B, h, d, (nb+f+b)*bs, D]
            return x.reshape(b, heads, d, nb + front + back, bs, dim)  # [.., nb+f+b, bs, D]

        def slots(x: torch.Tensor) -> torch.Tensor:
            """Every query block's key slots ``[B * Hkv, d * nb, ks (+ G), D]``: the
            neighbour blocks, then (with global tokens) the global keys."""
            x_cls = to_classes(x, before, after)  # [B, Hkv, d, nb+before+after, bs, D]
            parts = [x_cls[:, :, :, s : s + nb] for s in range(before + 1 + after)]
            if g:  # the same G global rows in every block
                parts.append(x[:, :, gpos, None, None].movedim(2, 4).expand(-1, -1, d, nb, -1, -1))
            return torch.cat(parts, dim=-2).view(b * hkv, d * nb, -1, dim)  # [., ., ks+G, D]

        # The G query heads of a key/value head are G*bs rows of each query block.
        qc = fold_groups(to_classes(q), hkv)  # [B, Hkv, d, nb, G*bs, D]
        qc = qc.reshape(b * hkv, d * nb, groups * bs, dim)  # [B*Hkv, d*nb, G*bs, D]
        # one softmax over the window and global columns: each pair counts once
        out = F.scaled_dot_product_attention(qc, slots(k), slots(v), attn_mask=keep, scale=scale)
        out = out.view(b, hkv, d, nb, groups * bs, dim)  # [B, Hkv, d, nb, G*bs, D]
        out = unfold_groups(out, groups)  # [B, H, d, nb, bs, D]
        out = out.reshape(b, h, d, nb * bs, dim).transpose(2, 3)  # [B, H, nb*bs, d, D]
        out = out.reshape(b, h, n_pad, dim)[:, :, :n]  # [B, H, N, D]
        if g:
            rows, kd, vd = q[:, :, gpos] * scale, k, v  # [B, H, G, D]; k, v [B, Hkv, N, D]
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

    ``slots``: one copy of the key (or value) slots ``[B, Hkv, d, nb, ks + G, D]``; ``mask``:
    the boolean mask as the additive float copy SDPA's CPU kernel makes ``[d, nb, G * bs,
    ks + G]`` (shared by batch and heads); ``q``: the class-major copy of q where dilation,
    padding or grouped query heads make one.

    - forward: both slot copies, the mask's float copy, the output, the fused kernel's
      per-thread tiles, with globals the dense rows' scores and output.
    - backward, in the fused kernel's backward: the saved slots, q, output and float mask,
      the output's gradient and its copy in the kernel's layout, dq and both slot gradients;
      with globals also the dense rows' gradients (index_copy's, dq, dk, dv) computed first.
    """
    n = inputs.seq_len
    d, bs, nb = _layout(p, n)
    n_pad = d * nb * bs
    ks = (2 if p.causal else 3) * bs
    groups = inputs.heads // inputs.kv_heads_count
    share = kv_share(inputs)  # k and v have Hkv heads, q and the output H
    vec = rows_bytes(inputs, n)
    q_copy = rows_bytes(inputs, n_pad) if d > 1 or n_pad > n or inputs.grouped else 0
    slots = int(rows_bytes(inputs, d * nb * (ks + g)) * share)
    mask = n_pad * groups * (ks + g) * inputs.element_size
    dense = 2 * rows_bytes(inputs, g, n)  # the global rows' scores and softmax [B, H, G, N]
    buffers = 0
    if torch.device(inputs.device).type == "cpu":
        grad = inputs.requires_grad
        buffers = cpu_flash_buffers_bytes(groups * bs, ks + g, inputs.head_dim, grad)
    if not inputs.requires_grad:
        return q_copy + 2 * slots + mask + vec + buffers + (dense if g else 0)
    kv = int(vec * share)
    around = 2 * vec + 2 * kv if g else 0
    return (q_copy or vec) + 4 * slots + mask + 4 * vec + buffers + around
