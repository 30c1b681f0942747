"""The plain ``bigbird`` kernel: BigBird's pattern (``attention_impls.bigbird``; Zaheer et al.,
2020, arXiv:2007.14062, section 2 and appendix D) in the ITC "blockified" form. Layout
``[B, H, N, D]`` as in ``harness.measure.backend``.

Each non-global query block gathers the keys and values of its ``L = 2g + 3 + r`` key blocks
(the global ones, the window, its random plan's) into ``[B, H, nq, L, b, D]``, one plan per
query head, each reading the blocks of its key/value head (with one plan for all heads,
``[B, Hkv, nq, L, b, D]`` per key/value head, and the ``G`` query heads of a key/value head are
``G * b`` rows of each block: ``attention_impls.grouped``); at most ``[B, H, nq, b, L * b]``
scores, masked by a per-block validity table built once per shape (duplicate or missing slots,
padded keys). The ``2g`` global query blocks use dense rows ``[B, H, 2g * b, N]``. No ``N x N``
tensor is created (except where every block is global: dense attention). The softmax is
``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask, whose fused kernels are
about 3x faster on CPU than explicit ``q k^T``, ``masked_fill``, ``softmax``, ``@ v``.

A length that ``b`` does not divide is padded to ``nb * b``: padded keys are masked and padded
query rows are dropped from the output.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from attention_impls.footprint import cpu_flash_buffers_bytes, fused_attention_bytes, rows_bytes
from attention_impls.grouped import fold_groups, kv_share, unfold_groups
from harness.measure.backend import AttentionFn
from harness.measure.inputs import Inputs

if TYPE_CHECKING:  # the family's module imports this one
    from attention_impls.bigbird import BigBirdParams


def key_block_table(
    seq_len: int, params: BigBirdParams, rand: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key blocks of each non-global query block in each random plan of ``rand`` ``[P, nq, r]``
    (``random_block_table``): ids ``[P, nq, L]`` and a validity mask ``[P, nq, L]``.

    Slots are the 2g global blocks, the window ``I-1, I, I+1`` and the r random blocks. A window
    slot that is out of range or global (already a global slot) is invalid, as is a missing
    random block; invalid slots hold the dummy id 0 so that the gather stays in range.
    """
    b, g = params.block_size, params.global_blocks
    nb, plans = math.ceil(seq_len / b), rand.shape[0]
    query = torch.arange(g, max(nb - g, g))  # [nq], empty when every block is global
    glob = torch.cat([torch.arange(g), torch.arange(nb - g, nb)])  # [2g]
    window = query[:, None] + torch.arange(-1, 2)  # [nq, 3]
    fixed = torch.cat([glob.expand(query.numel(), -1), window], dim=1)  # [nq, 2g + 3]
    ids = torch.cat([fixed.expand(plans, -1, -1), rand], dim=2)  # [P, nq, L]
    glob_valid = torch.ones(query.numel(), 2 * g, dtype=torch.bool)  # [nq, 2g]
    fixed_valid = torch.cat([glob_valid, (window >= g) & (window < nb - g)], dim=1)  # [nq, 2g+3]
    valid = torch.cat([fixed_valid.expand(plans, -1, -1), rand >= 0], dim=2)  # [P, nq, L]
    return ids.where(valid, 0).to(device), valid.to(device)


def block_attention(inputs: Inputs, params: BigBirdParams, rand: torch.Tensor) -> AttentionFn:
    """The closure for ``inputs``, with the random plans ``rand`` ``[P, nq, r]``: P = H (a plan
    per query head) or 1 (one for all)."""
    n, scale = inputs.seq_len, inputs.scale
    b, g = params.block_size, params.global_blocks
    hkv, groups = inputs.kv_heads_count, inputs.heads // inputs.kv_heads_count
    gqa = groups > 1  # SDPA's own grouped-query attention for the dense rows
    nb = math.ceil(n / b)
    pad = nb * b - n
    if nb <= 2 * g:

        def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)

        return dense

    device = torch.device(inputs.device)
    ids, valid = key_block_table(n, params, rand, device)  # [P, nq, L]
    plans, nq, width = ids.shape
    key_pos = ids[..., None] * b + torch.arange(b, device=device)  # [P, nq, L, b]
    # Padded keys only live in the last block; masking them here keeps softmax exact.
    keep = valid[..., None] & (key_pos < n)  # [P, nq, L, b]
    keep = keep.reshape(1, plans * nq, 1, width * b)  # [1, P*nq, 1, L*b]
    # One flat index into the [B * Hkv * nb] blocks of k and v for every gathered slot: a plan
    # per head reads key/value head h // G's blocks, one plan reads every key/value head's.
    # index_select on block rows is about 4x faster than advanced indexing, forward and
    # backward together on CPU (index_add_ against index_put_ with accumulate).
    # rows: H query heads (a plan each) or Hkv key/value heads (one plan)
    if plans > 1:
        kv_head = torch.arange(plans, device=device) // groups  # [H]
    else:
        kv_head = torch.arange(hkv, device=device)  # [Hkv]
    head_ids = kv_head[:, None, None] * nb + ids  # [rows, nq, L]
    batch_start = torch.arange(inputs.batch, device=device) * hkv * nb  # [B]
    flat_ids = (batch_start[:, None] + head_ids.flatten()).flatten()  # [B * rows * nq * L]

    def gather_blocks(x: torch.Tensor) -> torch.Tensor:
        """The slots' blocks of padded ``x`` ``[B, Hkv, nb * b, D]``, ``[B * rows * nq * L,
        b * D]``."""
        blocks = x.reshape(-1, b * x.shape[-1])  # [B * Hkv * nb, b * D]
        return blocks.index_select(0, flat_ids)  # [B * rows * nq * L, b * D]

    def middle_blocks(qp: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor) -> torch.Tensor:
        """The non-global query blocks' output ``[B, H, nq*b, D]`` from padded q, k, v."""
        bsz, heads, _, dim = qp.shape
        # SDPA's fused CPU/CUDA kernels want 4-D inputs: the query blocks play the role of
        # heads, so that ``keep`` broadcasts over the batch.
        qb = qp.reshape(bsz, heads, nb, b, dim)[:, :, g : nb - g]  # [B, H, nq, b, D]
        if plans > 1:
            # A plan per head: query head h gathers its plan's blocks of key/value head h // G.
            qb = qb.reshape(bsz, heads * nq, b, dim)  # [B, H*nq, b, D]
            kb = gather_blocks(kp).view(bsz, heads * nq, width * b, dim)  # [B, H*nq, L*b, D]
            vb = gather_blocks(vp).view(bsz, heads * nq, width * b, dim)  # [B, H*nq, L*b, D]
            mid = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=keep, scale=scale)
            return mid.view(bsz, heads, nq * b, dim)  # [B, H, nq*b, D]
        # One plan: batch and key/value heads are merged, and the G query heads of a key/value
        # head are G*b rows of each block against the same gathered blocks.
        qb = fold_groups(qb, hkv)  # [B, Hkv, nq, G*b, D]
        qb = qb.reshape(bsz * hkv, nq, groups * b, dim)  # [B*Hkv, nq, G*b, D]
        kb = gather_blocks(kp).view(bsz * hkv, nq, width * b, dim)  # [B*Hkv, nq, L*b, D]
        vb = gather_blocks(vp).view(bsz * hkv, nq, width * b, dim)  # [B*Hkv, nq, L*b, D]
        mid = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=keep, scale=scale)
        mid = mid.view(bsz, hkv, nq, groups * b, dim)  # [B, Hkv, nq, G*b, D]
        return unfold_groups(mid, groups).reshape(bsz, heads, nq * b, dim)  # [B, H, nq*b, D]

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qp, kp, vp = (F.pad(t, (0, 0, 0, pad)) if pad else t for t in (q, k, v))
        middle = middle_blocks(qp, kp, vp)  # [B, H, nq*b, D]
        if g == 0:
            return middle[:, :, :n]  # [B, H, N, D]
        # Global query blocks attend every real key: dense rows over the unpadded k, v.
        gq = torch.cat([qp[:, :, : g * b], qp[:, :, (nb - g) * b :]], dim=2)  # [B, H, 2gb, D]
        glob = F.scaled_dot_product_attention(gq, k, v, scale=scale, enable_gqa=gqa)
        out = torch.cat([glob[:, :, : g * b], middle, glob[:, :, g * b :]], dim=2)  # [.., nb*b, D]
        return out[:, :, :n]  # [B, H, N, D]

    return fn


def block_bytes(inputs: Inputs, params: BigBirdParams, plans: int) -> int:
    """Peak of ``block_attention``'s closure with ``plans`` random plans, counted from the tensors
    it allocates; all-global is dense fused SDPA (``fused_attention_bytes``).

    ``K``: the gathered key (or value) blocks ``[B, H, nq, L, b, D]`` (one plan:
    ``[B, Hkv, nq, L, b, D]``), ``L = 2g + 3 + r`` slots (invalid ones are gathered too);
    ``mid``: the middle blocks' output ``[B, H, nq * b, D]``; padding copies q, k, v to
    ``nb * b`` rows.

    - forward: the padded copies, both ``K``, ``mid`` and, with global blocks, the global rows'
      query copy and output and the concatenated output.
    - backward, in the middle blocks' fused backward: both ``K`` (saved) and their gradients,
      ``mid`` (saved), its gradient's copy and dq; beside them the output and its gradient, and
      the global rows' dk and dv (full length, computed first); without global blocks only the
      gradient of ``mid``; the padded q stays alive in the saved view of it.
    """
    n, dim = inputs.seq_len, inputs.head_dim
    nb = math.ceil(n / params.block_size)
    if nb <= 2 * params.global_blocks:
        return fused_attention_bytes(inputs)
    g, size = params.global_blocks, params.block_size
    nq, slots = nb - 2 * g, 2 * g + 3 + params.random_blocks
    padded = rows_bytes(inputs, nb * size) if nb * size > n else 0
    share = kv_share(inputs) if plans == 1 else 1.0  # K has the key/value heads, or H
    blocks = int(rows_bytes(inputs, nq * slots * size) * share)  # K
    mid = rows_bytes(inputs, nq * size)
    out = rows_bytes(inputs, nb * size)
    glob_rows = rows_bytes(inputs, 2 * g * size)
    buffers = cpu_flash_buffers_bytes(size, slots * size, dim, inputs.requires_grad)
    if torch.device(inputs.device).type != "cpu":
        buffers = 0
    if not inputs.requires_grad:
        return 3 * padded + 2 * blocks + mid + (2 * glob_rows + out if g else 0) + buffers
    around = 2 * out + 2 * rows_bytes(inputs, n) if g else mid
    return 4 * blocks + 3 * mid + around + padded + buffers
