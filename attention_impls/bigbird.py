"""BigBird block-sparse attention, ITC variant (Zaheer et al., 2020, "Big Bird: Transformers for
Longer Sequences", NeurIPS, arXiv:2007.14062, section 2 and appendix D).

Layout ``[B, H, N, D]`` (see ``harness.measure.backend``). The sequence is cut into ``nb = ceil(N /
b)`` blocks of ``b = block_size`` positions; the pattern is defined on blocks:

- window: query block ``I`` attends key blocks ``I-1, I, I+1`` (those that exist, no wrap-around);
- global: the first ``g`` and the last ``g`` blocks are global: every query block attends them and
  their queries attend every key;
- random: each non-global query block attends ``r`` further key blocks drawn uniformly without
  replacement among the blocks it does not already attend (neither window nor global), all of
  them when fewer than ``r`` exist. Each head has its own draw (its random *plan*), the same for
  every batch element, as in the paper's code (``bigbird_block_rand_mask_with_head``) and HF's
  ``BigBirdBlockSparseAttention`` (``rand_attn`` per head, expanded over the batch): the random
  graph is what lets information travel, and heads that draw differently see more of it.
  ``--shared-random-plan`` draws one plan for all heads (this module's only plan before issue
  16; its gather is shared by the query heads of a key/value head). The draw depends only on
  ``(N, params, heads, seed)``; it is made on CPU from a ``torch.Generator`` seeded with
  ``inputs.seed`` by ``random_block_table``, which both ``prepare`` and ``mask`` call, so the
  timed closure and the mask contract see the same blocks. ``mask`` is ``[1, H, M, N]`` per
  head (``[1, 1, M, N]`` shared): per head, not per batch element, as the paper's code and HF.

Each (query, key) pair counts once. When ``nb <= 2g`` every block is global: dense attention.
The rule on blocks is ``allowed``, which ``mask`` and, for FlexAttention, ``mask_mod`` evaluate;
``flex-bigbird`` holds a ``BigBird`` for the pattern (``attention_impls.flex``).

A length that ``b`` does not divide is padded to ``nb * b``: padded keys are masked and padded
query rows are dropped from the output, so the result is exactly the pattern above restricted to
the ``N`` real positions.

The plain kernel, ``attention_impls.bigbird_blocks``, gathers each query block's key blocks (ITC
"blockified" form): ``O(N * b * L)`` memory with ``L = 3 + 2g + r`` key blocks per non-global
query block, never ``N x N``. A plan per head gathers per query head; one plan for all heads
gathers once per key/value head, shared by its query heads under grouped-query attention: that
is the cost the shared plan saves. Decoding and packed documents are refused: the block layout,
its random draws and the global blocks at both ends are defined on all ``N`` positions as query
blocks and key blocks alike, and BigBird defines no rule for a query block cut by a document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from attention_impls.bigbird_blocks import block_attention, block_bytes
from attention_impls.flex import FlexMaskBackend, Mod, block_mask_from_blocks, scalar, tile_for
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import param
from harness.measure.registry import register
from harness.store.facts import Promise

if TYPE_CHECKING:  # older torch has no FlexAttention: a reason, never an import error
    from torch.nn.attention.flex_attention import BlockMask


@dataclass(frozen=True)
class BigBirdParams:
    block_size: int = param(64, "--block-size", "block size b", low=1)
    global_blocks: int = param(
        1, "--global-blocks", "global blocks g at each end: the first g and the last g", low=0
    )
    random_blocks: int = param(
        3, "--random-blocks", "random key blocks r per non-global query block", low=0
    )
    shared_plan: bool = param(
        False, "--shared-random-plan", "one random plan for all heads (default: one per head)"
    )


def plans(params: BigBirdParams, heads: int) -> int:
    """How many random plans ``heads`` heads have: one each, or one for all (shared)."""
    return 1 if params.shared_plan else heads


def random_block_table(
    seq_len: int, params: BigBirdParams, seed: int, heads: int | None = None
) -> torch.Tensor:
    """The random key blocks of each non-global query block ``g .. nb-g-1``, on CPU: ``[nq, r]``
    (one plan), or ``[heads, nq, r]`` (a plan per head).

    Entries are block ids, ``-1`` where the row has fewer than ``r`` blocks to draw from. Uses
    Floyd's algorithm, vectorised over rows and heads, so the cost is ``O(heads * nq * r)``
    rather than ``O(nb^2)``. The plans are drawn one after the other from one generator: head
    0's plan is the one plan, and more heads add plans without changing the first ones.
    """
    b, g, r = params.block_size, params.global_blocks, params.random_blocks
    nb = math.ceil(seq_len / b)
    nq, plans_ = max(nb - 2 * g, 0), heads or 1
    table = torch.full((plans_, nq, r), -1, dtype=torch.long)
    if nq > 0 and r > 0:
        query = torch.arange(g, nb - g)  # [nq]
        # Candidates of row I are the non-global blocks g .. nb-g-1 minus the window lo .. hi, a
        # contiguous run: candidate number t maps to block g + t before the run and g + t + w after.
        lo = (query - 1).clamp(min=g)
        hi = (query + 1).clamp(max=nb - g - 1)
        width = hi - lo + 1
        avail = nq - width  # [nq]
        gen = torch.Generator().manual_seed(seed)
        # [P, r, nq]: plan by plan, step by step, the stream one plan of r steps would draw
        uniform = torch.rand(plans_, r, nq, generator=gen, dtype=torch.float64)
        # Floyd: for j = avail-r .. avail-1 draw t in [0, j]; take j if t was already taken. With
        # avail < r the steps with j < 0 are skipped and the row ends up with every candidate.
        for step in range(r):
            j = avail - r + step  # [nq]
            t = torch.minimum((uniform[:, step] * (j + 1).clamp(min=0)).long(), j.clamp(min=0))
            seen = (table[..., :step] == t[..., None]).any(dim=-1)  # [P, nq]
            table[..., step] = torch.where(j < 0, -1, torch.where(seen, j, t))
        cand = table  # candidate numbers, -1 = none
        block = torch.where(g + cand < lo[:, None], g + cand, g + cand + width[:, None])
        table = torch.where(cand < 0, -1, block)  # [P, nq, r]
    return table[0] if heads is None else table


def random_rows(
    seq_len: int, params: BigBirdParams, seed: int, device: torch.device, plans_: int
) -> tuple[torch.Tensor, int]:
    """``random_block_table`` of ``plans_`` plans for ``allowed``, flat ``[P * nb * r']``, and
    ``r' = max(r, 1)``: padded with -1 (no block) to nb rows and one column at least, the
    compiled mask_mod does not depend on g, and r = 0 shares the graph of r = 1 (flat: a
    ``[row, t]`` index fails in compiled create_block_mask, fake tensors under vmap)."""
    table = random_block_table(seq_len, params, seed, plans_)  # [P, nq, r], -1 = no block
    rows, r = math.ceil(seq_len / params.block_size), max(table.shape[-1], 1)
    table = F.pad(table, (0, r - table.shape[-1], 0, rows - table.shape[1]), value=-1)
    return table.flatten().to(device), r  # [P * rows * r]


def allowed(qb, kb, blocks, glob, table: torch.Tensor, r: int, plan=0) -> torch.Tensor:
    """The pattern on (broadcast) query and key blocks of ``blocks`` (a tensor) in random plan
    ``plan`` (broadcast; a head, or 0 for a shared plan): I attends J iff ``|I - J| <= 1``, or I
    or J is one of the ``glob`` global blocks at either end, or J is one of I's random blocks in
    that plan (``random_rows``). The one definition that the dense reference (``BigBird.mask``)
    and the Flex kernel's ``mask_mod`` (all scalars tensors) both evaluate."""
    keep = ((qb - kb).abs() <= 1) | (qb < glob) | (qb >= blocks - glob)
    keep = keep | (kb < glob) | (kb >= blocks - glob)
    row = plan * blocks + torch.minimum((qb - glob).clamp(min=0), blocks - 1)  # global: any row
    for t in range(r):  # unrolled at trace time
        keep = keep | (table[row * r + t] == kb)
    return keep


def bigbird_pairs(n: int, b: int, g: int, r: int, seed: int, plans_: int = 1) -> float:
    """Pairs per (batch, head), averaged over ``plans_`` random plans (a plan per head)."""
    nb = -(-n // b)
    if nb <= 2 * g:  # every block global: dense attention
        return float(n * n)
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
    random_keys = drawn * b  # [nq]
    short = np.zeros(nb - 2 * g)  # [nq] the plans' mean of keys missing from a short last block
    if g == 0 and r > 0 and size[-1] < b:
        # Only here can a random block be the short last block: the seeded draw decides.
        params = BigBirdParams(block_size=b, global_blocks=g, random_blocks=r)
        table = random_block_table(n, params, seed, plans_).numpy()  # [P, nq, r]
        short = (table == nb - 1).any(axis=2).mean(axis=0) * (b - int(size[-1]))
    keys = global_keys + window_keys + random_keys  # [nq] keys of each ordinary query
    return float(pairs + int((size[g : nb - g] * keys).sum()) - (size[g : nb - g] * short).sum())


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

    def attended_pairs(self, seq_len: int, seed: int = 0, heads: int = 1) -> float:
        """Exactly ``mask(...).sum()`` per (batch, head), averaged over the ``heads`` heads' plans;
        ``seed`` and ``heads`` matter only where a random block can be the short last block."""
        p = self.params
        return bigbird_pairs(
            seq_len, p.block_size, p.global_blocks, p.random_blocks, seed, plans(p, heads)
        )

    def case_pairs(self, inputs: Inputs) -> float | None:
        """``attended_pairs`` over the case's heads (their plans differ); the mask counted where
        the base counts it (decoding, documents: ``flex-bigbird`` computes them). Shared with
        ``flex-bigbird``, hence the base named."""
        if inputs.decoding or inputs.documents > 1:
            return AttentionBackend.case_pairs(self, inputs)
        return self.attended_pairs(inputs.seq_len, inputs.seed, inputs.heads)

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
        plans_ = plans(self.params, inputs.heads)
        table = random_block_table(inputs.seq_len, self.params, inputs.seed, plans_)  # [P, nq, r]
        return block_attention(inputs, self.params, table)

    def block_pattern(self, inputs: Inputs, device: torch.device) -> torch.Tensor:
        """``allowed`` on every pair of blocks ``[P, nb, nb]``: a plan per head (P = H), or one
        for all (P = 1)."""
        n, b = inputs.seq_len, self.params.block_size
        plans_ = plans(self.params, inputs.heads)
        table, r = random_rows(n, self.params, inputs.seed, device, plans_)
        blocks = torch.arange(math.ceil(n / b), device=device)  # [nb]
        nb, glob = torch.tensor(blocks.numel(), device=device), self.params.global_blocks
        plan = torch.arange(plans_, device=device)[:, None, None]  # [P, 1, 1]
        return allowed(blocks[:, None], blocks[None, :], nb, glob, table, r, plan)  # [P, nb, nb]

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[1, P, M, N]``: a plan per head (P = H), or one for all (P = 1)."""
        n, device, b = inputs.seq_len, q.device, self.params.block_size
        rows = torch.arange(n, device=device) if rows is None else rows.to(device)
        keys = torch.arange(n, device=device) // b  # [N] key blocks
        return self.block_pattern(inputs, device)[:, rows // b][..., keys][None]  # [1, P, M, N]

    def mask_mod(self, inputs: Inputs) -> Mod:
        """``allowed`` for FlexAttention, on the blocks of the positions."""
        p, n, dev = self.params, inputs.seq_len, torch.device(inputs.device)
        plans_ = plans(p, inputs.heads)
        table, r = random_rows(n, p, inputs.seed, dev, plans_)
        size, glob = scalar(p.block_size, dev), scalar(p.global_blocks, dev)
        blocks = scalar(math.ceil(n / p.block_size), dev)
        per_head = scalar(int(plans_ > 1), dev)  # head h reads plan h, or every head plan 0

        def mask_mod(b, h, i, j):
            return allowed(i // size, j // size, blocks, glob, table, r, h * per_head)

        return mask_mod

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The plain kernel's peak (``bigbird_blocks.block_bytes``)."""
        return block_bytes(inputs, self.params, plans(self.params, inputs.heads))


@register
class FlexBigBird(FlexMaskBackend):
    name = "flex-bigbird"
    description = "BigBird window, global and random blocks as a compiled FlexAttention mask_mod"
    pattern = BigBird
    case_pairs = BigBird.case_pairs

    def attended_pairs(self, seq_len: int, seed: int = 0, heads: int = 1) -> float:
        return self.plain.attended_pairs(seq_len, seed, heads)

    def tile(self, inputs: Inputs) -> int:
        return tile_for(self.params.block_size, inputs.device)

    def mask_heads(self, inputs: Inputs) -> int | None:
        return inputs.heads if plans(self.params, inputs.heads) > 1 else None

    def block_mask(self, inputs: Inputs, mod: Mod, tile: int) -> BlockMask:
        """From the pattern on blocks where the tiles are whole blocks and the case does not cut
        them (no decoding, one document): no ``mod`` call per pair, for any number of plans."""
        if not (inputs.decoding or inputs.documents > 1):
            blocks = self.plain.block_pattern(inputs, torch.device(inputs.device))
            made = block_mask_from_blocks(blocks, self.params.block_size, inputs.seq_len, tile, mod)
            if made is not None:
                return made
        return super().block_mask(inputs, mod, tile)
