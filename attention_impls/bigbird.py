"""BigBird block-sparse attention, ITC variant (Zaheer et al., 2020, "Big Bird: Transformers for
Longer Sequences", NeurIPS, arXiv:2007.14062, section 2 and appendix D).

Layout ``[B, H, N, D]`` (see ``harness.measure.backend``). The sequence is cut into ``nb = ceil(N /
b)`` blocks of ``b = block_size`` positions; the pattern is defined on blocks:

- window: query block ``I`` attends key blocks ``I-1, I, I+1`` (those that exist, no wrap-around);
- global: the first ``g`` and the last ``g`` blocks are global: every query block attends them and
  their queries attend every key;
- random: each non-global query block attends ``r`` further key blocks drawn uniformly without
  replacement among the blocks it does not already attend (neither window nor global), all of
  them when fewer than ``r`` exist. The draw depends only on ``(N, params, seed)``; it is made on
  CPU from a ``torch.Generator`` seeded with ``inputs.seed`` by ``random_block_table``, which both
  ``prepare`` and ``mask`` call, so the timed closure and the mask contract see the same blocks.

Each (query, key) pair counts once. When ``nb <= 2g`` every block is global: dense attention.
The rule on blocks is ``allowed``, which ``mask`` and, for FlexAttention, ``mask_mod`` evaluate;
``flex-bigbird`` holds a ``BigBird`` for the pattern (``attention_impls.flex``).

A length that ``b`` does not divide is padded to ``nb * b``: padded keys are masked with ``-inf``
and padded query rows are dropped from the output, so the result is exactly the pattern above
restricted to the ``N`` real positions.

Memory is ``O(N * b * L)`` with ``L = 3 + 2g + r`` key blocks per non-global query block: the keys
and values of those blocks are gathered into ``[B, Hkv, nq, L, b, D]`` (ITC "blockified" form), at
most ``[B, H, nq, b, L * b]`` scores, masked by a per-block validity table (duplicate or missing
slots, padded keys) built in ``prepare``; the ``2g`` global query blocks use dense rows
``[B, H, 2g * b, N]``. No ``N x N`` tensor is created (except in the dense case). The softmax is
``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask, whose fused kernels are
about 3x faster on CPU than explicit ``q k^T``, ``masked_fill``, ``softmax``, ``@ v``.

Grouped-query attention: the ``G`` query heads of a key/value head are ``G * b`` rows of each
query block against the same gathered key blocks (``attention_impls.grouped``), and the dense
rows use SDPA's ``enable_gqa``. Decoding and packed documents are refused: the block layout,
its random draws and the global blocks at both ends are defined on all ``N`` positions as query
blocks and key blocks alike, and BigBird defines no rule for a query block cut by a document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from attention_impls.flex import FlexMaskBackend, Mod, scalar, tile_for
from attention_impls.footprint import cpu_flash_buffers_bytes, fused_attention_bytes, rows_bytes
from attention_impls.grouped import fold_groups, kv_share, unfold_groups
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import param
from harness.measure.registry import register
from harness.store.facts import Promise


@dataclass(frozen=True)
class BigBirdParams:
    block_size: int = param(64, "--block-size", "block size b", low=1)
    global_blocks: int = param(
        1, "--global-blocks", "global blocks g at each end: the first g and the last g", low=0
    )
    random_blocks: int = param(
        3, "--random-blocks", "random key blocks r per non-global query block", low=0
    )


def random_block_table(seq_len: int, params: BigBirdParams, seed: int) -> torch.Tensor:
    """The random key blocks of each non-global query block ``g .. nb-g-1``: ``[nq, r]`` on CPU.

    Entries are block ids, ``-1`` where the row has fewer than ``r`` blocks to draw from. Uses
    Floyd's algorithm, vectorised over rows, so the cost is ``O(nq * r)`` rather than ``O(nb^2)``.
    """
    b, g, r = params.block_size, params.global_blocks, params.random_blocks
    nb = math.ceil(seq_len / b)
    nq = max(nb - 2 * g, 0)
    table = torch.full((nq, r), -1, dtype=torch.long)
    if nq == 0 or r == 0:
        return table
    query = torch.arange(g, nb - g)  # [nq]
    # Candidates of row I are the non-global blocks g .. nb-g-1 minus the window lo .. hi, a
    # contiguous run: candidate number t maps to block g + t before the run and g + t + w after.
    lo = (query - 1).clamp(min=g)
    hi = (query + 1).clamp(max=nb - g - 1)
    width = hi - lo + 1
    avail = nq - width  # [nq]
    gen = torch.Generator().manual_seed(seed)
    # Floyd: for j = avail-r .. avail-1 draw t in [0, j]; take j if t was already taken. With
    # avail < r the steps with j < 0 are skipped and the row ends up with every candidate.
    for step in range(r):
        j = avail - r + step  # [nq]
        u = torch.rand(nq, generator=gen, dtype=torch.float64)
        t = torch.minimum((u * (j + 1).clamp(min=0)).long(), j.clamp(min=0))
        seen = (table[:, :step] == t[:, None]).any(dim=1)
        table[:, step] = torch.where(j < 0, -1, torch.where(seen, j, t))
    cand = table  # candidate numbers, -1 = none
    block = torch.where(g + cand < lo[:, None], g + cand, g + cand + width[:, None])
    return torch.where(cand < 0, -1, block)  # [nq, r]


def random_rows(
    seq_len: int, params: BigBirdParams, seed: int, device: torch.device
) -> tuple[torch.Tensor, int]:
    """``random_block_table`` for ``allowed``, flat ``[nb * r']``, and ``r' = max(r, 1)``: padded
    with -1 (no block) to nb rows and one column at least, the compiled mask_mod does not depend
    on g, and r = 0 shares the graph of r = 1 (flat: a ``[row, t]`` index fails in compiled
    create_block_mask, fake tensors under vmap)."""
    table = random_block_table(seq_len, params, seed)  # [nq, r], -1 = no block
    rows, r = math.ceil(seq_len / params.block_size), max(table.shape[1], 1)
    table = F.pad(table, (0, r - table.shape[1], 0, rows - table.shape[0]), value=-1)
    return table.flatten().to(device), r  # [rows * r]


def allowed(qb, kb, blocks, glob, table: torch.Tensor, r: int) -> torch.Tensor:
    """The pattern on (broadcast) query and key blocks of ``blocks`` (a tensor): I attends J iff
    ``|I - J| <= 1``, or I or J is one of the ``glob`` global blocks at either end, or J is one of
    I's random blocks (``random_rows``). The one definition that the dense reference
    (``BigBird.mask``) and the Flex kernel's ``mask_mod`` (all scalars tensors) both evaluate."""
    keep = ((qb - kb).abs() <= 1) | (qb < glob) | (qb >= blocks - glob)
    keep = keep | (kb < glob) | (kb >= blocks - glob)
    row = torch.minimum((qb - glob).clamp(min=0), blocks - 1)  # global rows: any row
    for t in range(r):  # unrolled at trace time
        keep = keep | (table[row * r + t] == kb)
    return keep


def key_block_table(
    seq_len: int, params: BigBirdParams, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key blocks of each non-global query block: ids ``[nq, L]`` and a validity mask ``[nq, L]``.

    Slots are the 2g global blocks, the window ``I-1, I, I+1`` and the r random blocks. A window
    slot that is out of range or global (already a global slot) is invalid, as is a missing
    random block; invalid slots hold the dummy id 0 so that the gather stays in range.
    """
    b, g = params.block_size, params.global_blocks
    nb = math.ceil(seq_len / b)
    query = torch.arange(g, max(nb - g, g))  # [nq], empty when every block is global
    glob = torch.cat([torch.arange(g), torch.arange(nb - g, nb)])  # [2g]
    window = query[:, None] + torch.arange(-1, 2)  # [nq, 3]
    rand = random_block_table(seq_len, params, seed)  # [nq, r]
    ids = torch.cat([glob.expand(query.numel(), -1), window, rand], dim=1)  # [nq, L]
    glob_valid = torch.ones(query.numel(), 2 * g, dtype=torch.bool)  # [nq, 2g]
    valid = torch.cat([glob_valid, (window >= g) & (window < nb - g), rand >= 0], dim=1)  # [nq, L]
    return ids.where(valid, 0).to(device), valid.to(device)


def bigbird_pairs(n: int, b: int, g: int, r: int, seed: int) -> int:
    nb = -(-n // b)
    if nb <= 2 * g:  # every block global: dense attention
        return n * n
    size = np.full(nb, b, dtype=np.int64)  # [nb] real positions per block; the last may be short
    size[-1] = n - (nb - 1) * b
    start = np.concatenate([[0], np.cumsum(size)])  # [nb + 1] first position of each block
    global_keys = int(start[g] + (n - start[nb - g]))  # first g and last g blocks
    pairs = global_keys * n  # global query blocks attend every key
    blocks = np.arange(g, nb - g)  # [nq] ordinary query blocks
    # Window blocks I-1, I, I+1 that exist and are not global (those are already counted).
    lo, hi = np.maximum(blocks - 1, g), np.minimum(blocks + 1, nb - g - 1)
    window_keys = start[hi + 1] - start[lo]
    # r random blocks among the ordinary blocks outside the window, all of them if fewer exist.
    drawn = np.minimum(r, (nb - 2 * g) - (hi - lo + 1))
    random_keys = drawn * b
    if g == 0 and r > 0 and size[-1] < b:
        # Only here can a random block be the short last block: the seeded draw decides.
        params = BigBirdParams(block_size=b, global_blocks=g, random_blocks=r)
        table = random_block_table(n, params, seed).numpy()  # [nq, r]
        random_keys = random_keys - (table == nb - 1).any(axis=1) * (b - int(size[-1]))
    keys = global_keys + window_keys + random_keys  # [nq] keys of each ordinary query
    return pairs + int((size[g : nb - g] * keys).sum())


@register
class BigBird(AttentionBackend):
    name = "bigbird"
    family = "bigbird"
    description = "block-sparse window + global + random blocks (BigBird ITC)"
    is_sparse = True
    Params = BigBirdParams
    promise = Promise(1)
    # Decoding and packed documents are not computed: the blocks, their random draws and the
    # global blocks at both ends are laid out over all N positions as query and key blocks alike.
    supports_gqa = True
    why_not: ClassVar[dict[str, str]] = {
        "decoding": "its blocks are laid over all N positions, as queries and as keys",
        "documents": "BigBird defines no rule for a block cut by a document",
    }

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        """Exactly ``mask(...).sum()``; ``seed`` matters only where a random block can be the
        short last block."""
        p = self.params
        return float(bigbird_pairs(seq_len, p.block_size, p.global_blocks, p.random_blocks, seed))

    def param_errors(self, seq_len: int) -> list[str]:
        p = self.params
        errors = []
        if p.block_size < 1:
            errors.append(f"block_size must be >= 1, got {p.block_size}")
        elif p.block_size > seq_len:
            errors.append(f"block_size {p.block_size} exceeds the sequence length {seq_len}")
        blocks = math.ceil(seq_len / p.block_size) if p.block_size >= 1 else seq_len
        if p.global_blocks < 0:
            errors.append(f"global_blocks must be >= 0, got {p.global_blocks}")
        elif p.global_blocks > blocks:  # 2g >= blocks is already dense; beyond, no such blocks
            errors.append(
                f"global_blocks {p.global_blocks} is more than the {blocks} blocks of length "
                f"{seq_len}"
            )
        if p.random_blocks < 0:
            errors.append(f"random_blocks must be >= 0, got {p.random_blocks}")
        elif p.random_blocks > blocks:  # the table of draws is [blocks, r]: r is not capped
            errors.append(
                f"random_blocks {p.random_blocks} is more than the {blocks} blocks of length "
                f"{seq_len}: there are not that many to draw from"
            )
        return errors

    def prepare(self, inputs: Inputs) -> AttentionFn:
        n, scale = inputs.seq_len, inputs.scale
        b, g = self.params.block_size, self.params.global_blocks
        hkv, groups = inputs.kv_heads_count, inputs.heads // inputs.kv_heads_count
        gqa = groups > 1  # SDPA's own grouped-query attention for the dense rows
        nb = math.ceil(n / b)
        pad = nb * b - n
        if nb <= 2 * g:

            def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)

            return dense

        device = torch.device(inputs.device)
        ids, valid = key_block_table(n, self.params, inputs.seed, device)  # [nq, L]
        nq, width = ids.shape
        key_pos = ids[:, :, None] * b + torch.arange(b, device=device)  # [nq, L, b]
        # Padded keys only live in the last block; masking them here keeps softmax exact.
        keep = (valid[:, :, None] & (key_pos < n)).reshape(1, nq, 1, width * b)  # [1, nq, 1, L*b]

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            bsz, heads, _, dim = q.shape
            qp, kp, vp = (F.pad(t, (0, 0, 0, pad)) if pad else t for t in (q, k, v))
            # SDPA's fused CPU/CUDA kernels want 4-D inputs: batch and key/value heads are
            # merged, the nq query blocks play the role of heads so that ``keep`` broadcasts over
            # them, and the G query heads of a key/value head are G*b rows of each block.
            qb = qp.reshape(bsz, heads, nb, b, dim)[:, :, g : nb - g]  # [B, H, nq, b, D]
            qb = fold_groups(qb, hkv)  # [B, Hkv, nq, G*b, D]
            qb = qb.reshape(bsz * hkv, nq, groups * b, dim)  # [B*Hkv, nq, G*b, D]
            kb = kp.reshape(bsz, hkv, nb, b, dim)[:, :, ids]  # [B, Hkv, nq, L, b, D]
            vb = vp.reshape(bsz, hkv, nb, b, dim)[:, :, ids]  # [B, Hkv, nq, L, b, D]
            kb = kb.view(bsz * hkv, nq, width * b, dim)  # [B*Hkv, nq, L*b, D]
            vb = vb.view(bsz * hkv, nq, width * b, dim)  # [B*Hkv, nq, L*b, D]
            middle = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=keep, scale=scale)
            middle = middle.view(bsz, hkv, nq, groups * b, dim)  # [B, Hkv, nq, G*b, D]
            middle = unfold_groups(middle, groups).reshape(bsz, heads, nq * b, dim)
            if g == 0:
                return middle[:, :, :n]  # [B, H, N, D]
            # Global query blocks attend every real key: dense rows over the unpadded k, v.
            gq = torch.cat([qp[:, :, : g * b], qp[:, :, (nb - g) * b :]], dim=2)  # [B, H, 2gb, D]
            glob = F.scaled_dot_product_attention(gq, k, v, scale=scale, enable_gqa=gqa)
            out = torch.cat(
                [glob[:, :, : g * b], middle, glob[:, :, g * b :]], dim=2
            )  # [B, H, nb*b, D]
            return out[:, :, :n]  # [B, H, N, D]

        return fn

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, device, b = inputs.seq_len, q.device, self.params.block_size
        rows = torch.arange(n, device=device) if rows is None else rows.to(device)
        table, r = random_rows(n, self.params, inputs.seed, device)
        blocks = torch.arange(math.ceil(n / b), device=device)  # [nb]
        nb, glob = torch.tensor(blocks.numel(), device=device), self.params.global_blocks
        attend = allowed(rows[:, None] // b, blocks[None, :], nb, glob, table, r)  # [M, nb]
        return attend[:, torch.arange(n, device=device) // b][None, None]  # [1, 1, M, N]

    def mask_mod(self, inputs: Inputs) -> Mod:
        """``allowed`` for FlexAttention, on the blocks of the positions."""
        p, n, dev = self.params, inputs.seq_len, torch.device(inputs.device)
        table, r = random_rows(n, p, inputs.seed, dev)
        size, glob = scalar(p.block_size, dev), scalar(p.global_blocks, dev)
        blocks = scalar(math.ceil(n / p.block_size), dev)
        return lambda b, h, i, j: allowed(i // size, j // size, blocks, glob, table, r)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Peak of ``fn``, counted from the tensors it allocates; all-global is dense fused SDPA
        (``fused_attention_bytes``).

        ``K``: the gathered key (or value) blocks ``[B, Hkv, nq, L, b, D]``, ``L = 2g + 3 + r``
        slots (invalid ones are gathered too); ``mid``: the middle blocks' output
        ``[B, H, nq * b, D]``; padding copies q, k, v to ``nb * b`` rows.

        - forward: the padded copies, both ``K``, ``mid`` and, with global blocks, the global
          rows' query copy and output and the concatenated output.
        - backward, in the middle blocks' fused backward: both ``K`` (saved) and their gradients,
          ``mid`` (saved), its gradient's copy and dq; beside them the output and its gradient,
          and the global rows' dk and dv (full length, computed first); without global blocks
          only the gradient of ``mid``; the padded q stays alive in the saved view of it.
        """
        n, dim = inputs.seq_len, inputs.head_dim
        p = self.params
        nb = math.ceil(n / p.block_size)
        if nb <= 2 * p.global_blocks:
            return fused_attention_bytes(inputs)
        g, size = p.global_blocks, p.block_size
        nq, slots = nb - 2 * g, 2 * g + 3 + p.random_blocks
        padded = rows_bytes(inputs, nb * size) if nb * size > n else 0
        blocks = int(rows_bytes(inputs, nq * slots * size) * kv_share(inputs))  # K
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


@register
class FlexBigBird(FlexMaskBackend):
    name = "flex-bigbird"
    description = "BigBird window, global and random blocks as a compiled FlexAttention mask_mod"
    pattern = BigBird

    def tile(self, inputs: Inputs) -> int:
        return tile_for(self.params.block_size, inputs.device)
