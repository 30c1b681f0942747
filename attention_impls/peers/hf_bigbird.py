"""HuggingFace transformers' BigBird block-sparse attention, driven on our q, k, v: the ITC pattern
(Zaheer et al., 2020, "Big Bird: Transformers for Longer Sequences", NeurIPS, arXiv:2007.14062,
section 2 and appendix D) as ``BigBirdBlockSparseAttention.bigbird_block_sparse_attention``
computes it. Layout ``[B, H, N, D]`` as in ``harness.measure.backend``, which is HF's too.

Parameter mapping: ``block_size`` b is HF's ``block_size``; ``random_blocks`` r its
``num_random_blocks``; HF's global blocks are fixed at the first and the last block (our
``global_blocks = 1``) and its window at the three blocks ``I-1, I, I+1``.

What runs in the closure: ``bigbird_block_sparse_attention`` itself, on q, k, v (the module's
projections are never called) and the masks ``BigBirdModel.create_masks_for_block_sparse_attn``
makes from the attention mask, built in ``prepare``.

Deviations, and how they are handled or stated:
- HF's plan in eval mode: in ``eval()`` HF's plan functions return all-zero random blocks, so
  every "random" block is block 0, a global block, scored ``1 + r`` times: that is no random
  attention and not even a mask (block 0 weighs ``1 + r`` times). We use the training-mode plan,
  the paper's (random blocks present): ``prepare`` draws it with HF's own functions in training
  mode from ``numpy.random.seed(inputs.seed)`` (HF seeds with its layer index; the global numpy
  state is restored after), as ``bigbird_block_sparse_attention`` would, and the module's two plan
  functions are replaced by that plan; the module then runs in eval mode, which only skips HF's
  re-seeding, so the random draw is not timed. The plan is per head and differs from ours
  (``attention_impls.bigbird``): where the padded length is 1024, 3072 or 4096, HF uses the
  "old plans used in paper", drawn for ``max_position_embeddings`` (4096) positions, cut to the
  first rows, with random blocks among the first 1024 positions only (blocks ``1 .. 1024/b - 1``,
  not uniform over the sequence); otherwise ``_bigbird_block_rand_mask_with_head`` (the paper's
  rule, and block 1 may not draw block ``nb - 2``, nor the converse). ``mask`` and ``reference``
  are rebuilt from HF's plan (``hf_plan``, ``block_counts``).
- At length 1024 the old plans' range includes the last block, a global block: a row that draws
  it scores its keys twice in one softmax. So the reference is softmax attention with keys counted
  with multiplicity (``common.counted_attention``), and ``mask`` the pairs with a non-zero count.
- HF needs ``N`` a multiple of b: q, k, v are padded with zeros, as ``BigBirdModel._pad_to_block_
  size`` pads, and masked by its attention mask (HF's ``-10000`` penalty; exp underflows to 0).
- HF switches to full attention at ``N <= (5 + 2r) b`` and fails with ``r = 0``: refused.
- HF 5.x always builds the dense attention probabilities ``[B, H, N, N]`` (its output
  ``attention_probs``, for ``output_attentions``) from the block weights: memory is O(N^2),
  against the family's O(N) promise, which the scaling analysis then flags.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch

from attention_impls.bigbird import BigBirdParams
from attention_impls.peers import optional
from attention_impls.peers.common import counted_attention, padded
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import narrowed
from harness.measure.registry import register
from harness.store.facts import Promise

MODULE = "transformers.models.big_bird.modeling_big_bird"
OLD_PLAN_LENGTHS = (1024, 3072, 4096)  # HF's branch: the paper's plans at these lengths


def _module(heads: int, head_dim: int, block_size: int, random_blocks: int):
    from transformers.models.big_bird.modeling_big_bird import (
        BigBirdBlockSparseAttention,
        BigBirdConfig,
    )

    config = BigBirdConfig(
        hidden_size=heads * head_dim, num_attention_heads=heads, block_size=block_size,
        num_random_blocks=random_blocks, attention_type="block_sparse", use_bias=False,
    )  # fmt: skip
    attn = BigBirdBlockSparseAttention(config)
    attn.query = attn.key = attn.value = torch.nn.Identity()  # ours: never called
    return attn


@lru_cache(maxsize=16)
def hf_plan(n_pad: int, block_size: int, random_blocks: int, heads: int, seed: int) -> np.ndarray:
    """HF's random blocks ``[H, nb - 2, r]`` of query blocks ``1 .. nb - 2``, drawn by HF's own
    functions in training mode, as ``bigbird_block_sparse_attention`` draws them after
    ``np.random.seed(seed)``; the global numpy state is left as it was."""
    attn = _module(heads, 1, block_size, random_blocks).train()
    b, r, nb = block_size, random_blocks, n_pad // block_size
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        if n_pad in OLD_PLAN_LENGTHS:
            seq = attn.max_seqlen
            plan = [attn._bigbird_block_rand_mask(seq, seq, b, b, r, last_idx=1024)[: nb - 2]
                    for _ in range(heads)]  # fmt: skip
        else:
            lengths, counts = attn._get_rand_attn_plan(n_pad, b, r)
            plan = attn._bigbird_block_rand_mask_with_head(
                from_seq_length=n_pad, to_seq_length=n_pad, from_block_size=b, to_block_size=b,
                num_heads=heads, plan_from_length=lengths, plan_num_rand_blocks=counts,
            )  # fmt: skip
    finally:
        np.random.set_state(state)
    return np.stack(plan)


def block_counts(plan: np.ndarray, nb: int) -> torch.Tensor:
    """How many times each query block scores each key block, ``[H, nb, nb]``: the first and
    last query blocks every block once; the others the global blocks and their window once
    (a set: block 1's window holds block 0) plus each of their random blocks."""
    blocks = torch.arange(nb)
    base = ((blocks[:, None] - blocks[None, :]).abs() <= 1) | (blocks[None, :] % (nb - 1) == 0)
    base[[0, nb - 1]] = True
    counts = base.long().expand(plan.shape[0], nb, nb).clone()  # [H, nb, nb]
    rand = torch.from_numpy(plan.astype(np.int64))  # [H, nb - 2, r]
    counts[:, 1 : nb - 1].scatter_add_(2, rand, torch.ones_like(rand))
    return counts


class _Replay:
    """HF's two plan functions, replaced by the plan drawn in ``prepare``: the old-plan branch
    calls ``_bigbird_block_rand_mask`` once per head, the other ``..._with_head`` once."""

    def __init__(self, plan: np.ndarray) -> None:
        self.plan, self.calls = plan, 0

    def per_head(self, *args, **kwargs) -> np.ndarray:
        head = self.plan[self.calls % len(self.plan)]
        self.calls += 1
        return head

    def all_heads(self, *args, **kwargs) -> list[np.ndarray]:
        return list(self.plan)


@register
class HFBigBird(AttentionBackend):
    name = "hf-bigbird"
    family = "bigbird"
    description = "HF transformers' BigBird block-sparse kernel (its own random plan per head)"
    implementation = "transformers"
    is_sparse = True
    promise = Promise(1)  # the family's; HF's dense attention_probs break it (module docstring)
    preload = (MODULE,)
    Params = narrowed(BigBirdParams, "block_size", "random_blocks", qualname="HFBigBird.Params")
    why_not: ClassVar[dict[str, str]] = {
        "gqa": "HF's kernel gathers key blocks per query head",
        "decoding": "HF's blocks are laid over all N positions, as queries and as keys",
        "documents": "BigBird defines no rule for a block cut by a document",
    }

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs) + self.param_errors(inputs.seq_len)
        reason = optional.missing(MODULE, "transformers")
        if reason or reasons:
            return reasons + ([reason] if reason else [])
        return self.hf_limits(inputs)

    def hf_limits(self, inputs: Inputs) -> list[str]:
        """What HF's kernel cannot take of the family's parameters (with valid ones)."""
        b, r = self.params.block_size, self.params.random_blocks
        if r == 0:  # its reshape of the gathered random blocks fails
            return ["HF's block-sparse kernel fails with random_blocks 0"]
        if inputs.seq_len <= (5 + 2 * r) * b:
            return [
                f"HF switches to full attention at N <= (5 + 2r) b = {(5 + 2 * r) * b} "
                f"(block_size {b}, random_blocks {r})"
            ]
        try:
            self.plan(inputs)
        except ValueError as exc:  # HF's plan cannot place r blocks in some row
            return [f"HF's random plan fails at this length ({exc})"]
        return []

    def param_errors(self, seq_len: int) -> list[str]:
        """The family's rules (``attention_impls.bigbird``); HF's own limits are reasons."""
        b, r = self.params.block_size, self.params.random_blocks
        errors = []
        if b < 1:
            return [f"block_size must be >= 1, got {b}"]
        if b > seq_len:
            errors.append(f"block_size {b} exceeds the sequence length {seq_len}")
        if r < 0:
            errors.append(f"random_blocks must be >= 0, got {r}")
        elif r > -(-seq_len // b):
            errors.append(f"random_blocks {r} is more than the {-(-seq_len // b)} blocks")
        return errors

    def padded_length(self, seq_len: int) -> int:
        return -(-seq_len // self.params.block_size) * self.params.block_size

    def plan(self, inputs: Inputs) -> np.ndarray:
        n_pad, p = self.padded_length(inputs.seq_len), self.params
        return hf_plan(n_pad, p.block_size, p.random_blocks, inputs.heads, inputs.seed)

    def counts(self, inputs: Inputs, device: torch.device, rows: torch.Tensor | None):
        """``[1, H, M, N]``: how many times query ``rows`` score each key in HF's kernel."""
        n, b = inputs.seq_len, self.params.block_size
        blocks = block_counts(self.plan(inputs), self.padded_length(n) // b)
        blocks = blocks.to(device=device, dtype=torch.uint8)  # a few per pair: small at N x M
        keys = torch.arange(n, device=device)
        queries = keys if rows is None else rows.to(device)
        return blocks[:, queries // b][:, :, keys // b][None]  # [1, H, M, N]

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.counts(inputs, q.device, rows) > 0

    def reference(self, inputs, q, k, v, rows, compute_dtype=None) -> torch.Tensor:
        """Softmax attention with HF's multiplicities (a window block drawn again as a random
        block counts twice)."""
        counts = self.counts(inputs, q.device, rows.to(q.device) + inputs.query_offset)
        return counted_attention(q[:, :, rows], k, v, counts, compute_dtype)

    def case_pairs(self, inputs: Inputs) -> float | None:
        """Distinct attended pairs of HF's plan, the mean over the case's heads; None where the
        case is refused (HF may have no plan there)."""
        if self.not_supported_reasons(inputs):
            return None
        n, b = inputs.seq_len, self.params.block_size
        nb = self.padded_length(n) // b
        sizes = torch.full((nb,), b)
        sizes[-1] = n - (nb - 1) * b  # the last block's real positions
        seen = (block_counts(self.plan(inputs), nb) > 0).double()  # [H, nb, nb]
        return float((sizes[:, None] * seen * sizes[None, :]).sum() / inputs.heads)

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float | None:
        """``case_pairs`` for one head (HF's plan depends on the number of heads)."""
        return self.case_pairs(Inputs(1, 1, seq_len, 1, seed=seed))

    def prepare(self, inputs: Inputs) -> AttentionFn:
        from transformers.models.big_bird.modeling_big_bird import BigBirdModel

        b, h, n, d = inputs.shape
        bs, r, seed = self.params.block_size, self.params.random_blocks, inputs.seed
        n_pad, dev = self.padded_length(n), torch.device(inputs.device)
        attn = _module(h, d, bs, r)
        replay = _Replay(self.plan(inputs))
        attn._bigbird_block_rand_mask = replay.per_head
        attn._bigbird_block_rand_mask_with_head = replay.all_heads
        attn.eval()  # with the plan replaced, eval only skips HF's np.random.seed
        real = torch.zeros(b, n_pad, dtype=inputs.dtype, device=dev)  # HF's attention mask
        real[:, :n] = 1
        blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(
            real, bs
        )

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            qp, kp, vp = (padded(t, n_pad) for t in (q, k, v))  # [B, H, Np, D]
            out, _ = attn.bigbird_block_sparse_attention(
                qp, kp, vp, band, from_mask, to_mask, blocked, blocked, h, r, d, bs, bs, b,
                n_pad, n_pad, seed=seed, plan_from_length=None, plan_num_rand_blocks=None,
            )  # fmt: skip  # [B, Np, H, D]
            return out.transpose(1, 2)[:, :, :n]  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Peak of ``fn`` (within 5% of measured peaks at 1K, CPU, float32, b 64, r 3, D 64):
        HF's dense ``attention_probs`` ``[B, H, Np, Np]`` beside the block tensors of its five
        parts, about ``(5 + r) b`` scores per row three times (products, weights, the
        concatenation), the gathered key and value blocks ``2 (3 + r) D`` per row and the
        output; a backward pass adds about a fifth to the block tensors."""
        b, h, n, d = inputs.shape
        n_pad, r, size = self.padded_length(n), self.params.random_blocks, inputs.element_size
        bs = self.params.block_size
        rows = b * h * n_pad
        dense = rows * n_pad
        blocks = rows * ((5 + r) * bs * 3 + 2 * (3 + r) * d + 2 * d)
        if inputs.requires_grad:
            blocks = blocks * 6 // 5
        return int((dense + blocks) * size)
