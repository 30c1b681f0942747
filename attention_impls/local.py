"""Local attention in non-overlapping blocks, the Long Range Arena's baseline (Tay et al., 2021,
"Long Range Arena: A Benchmark for Efficient Transformers", ICLR, arXiv:2011.04006, section 4:
"a simple local attention baseline"; Tay, Dehghani, Abnar, Shen, Bahri, Pham, Rao, Yang, Ruder
and Metzler). Layout ``[B, H, N, D]`` as in ``harness.measure.backend``.

Pattern, with block size ``b``: the positions are cut into blocks ``0 .. b-1, b .. 2b-1, ...``
(the last one shorter when ``b`` does not divide ``N``) and query ``i`` attends key ``j`` iff
``i // b == j // b``; when causal, also ``j <= i`` (LRA's ``causal_mask`` within the block).
No other family expresses it: BigBird's window blocks (zero global and random blocks) still
attend the neighbouring blocks ``I - 1`` and ``I + 1``, Longformer's and the strided pattern's
windows slide. ``allowed`` is the rule, which ``mask`` and the Flex kernel's ``mask_mod``
evaluate. LRA's JAX code (``lra_benchmarks/models/local/local_attention.py``) reshapes ``[N]``
into ``[b, N / b]`` and attends along the first axis, which groups positions congruent modulo
``N / b`` rather than consecutive ones; the paper's contiguous blocks are computed here.

Implementation, O(N b) time and memory (never an N x N tensor): q, k, v cut into blocks
``[B, H, nb, b, D]`` (padded with zeros to ``nb * b`` positions), and one fused
``scaled_dot_product_attention`` call over them, the blocks as heads; a boolean mask, built once
in ``prepare``, drops padded keys, future keys (causal) and other documents' keys, or, causal
with nothing else to drop, SDPA's own ``is_causal`` (blocks are square). Padded query rows are
dropped; none is all masked (each sees the block's first key, or itself). Grouped-query
attention: the ``G`` query heads of a key/value head are ``G * b`` rows of each block
(``attention_impls.grouped``). Decoding: the blocks start at the block of the first query
(``N - M``), the rows before it padded. ``flex-local-blocks`` computes the same pattern with
compiled FlexAttention, tiles of ``b`` where the kernel takes them (``attention_impls.flex``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attention_impls.flex import FlexMaskBackend, Mod, scalar, tile_for
from attention_impls.footprint import cpu_flash_buffers_bytes, kv_bytes, rows_bytes
from attention_impls.grouped import fold_groups, fold_mask, other_document, unfold_groups
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import param
from harness.measure.registry import register
from harness.store.facts import Promise


@dataclass(frozen=True)
class LocalBlocksParams:
    block_size: int = param(64, "--block-size", "block size b", low=1)
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)


def allowed(i: torch.Tensor, j: torch.Tensor, size: int | torch.Tensor, causal: bool):
    """The pattern on (broadcast) query and key positions: the one definition that the dense
    reference (``LocalBlocks.mask``) and the Flex kernel's ``mask_mod`` both evaluate."""
    same = i // size == j // size
    return same & (j <= i) if causal else same


def local_pairs(n: int, b: int, causal: bool) -> int:
    """Attended pairs: ``N // b`` whole blocks and one of ``N mod b`` positions."""
    full, rest = divmod(n, b)
    if causal:
        return full * b * (b + 1) // 2 + rest * (rest + 1) // 2
    return full * b * b + rest * rest


def _layout(inputs: Inputs, b: int) -> tuple[int, int, int]:
    """First block's position ``s0``, query rows padded before the first query, blocks ``nb``."""
    s0 = inputs.query_offset // b * b
    lead = inputs.query_offset - s0
    return s0, lead, math.ceil((lead + inputs.query_len) / b)


@register
class LocalBlocks(AttentionBackend):
    name = "local-blocks"
    family = "local"
    description = "LRA's local attention: each query attends the keys of its own block of b"
    is_sparse = True
    Params = LocalBlocksParams
    promise = Promise(1)
    supports_gqa = supports_decoding = supports_documents = True

    def param_errors(self, seq_len: int) -> list[str]:
        b = self.params.block_size
        if b < 1:
            return [f"block_size must be >= 1, got {b}"]
        if b > seq_len:
            return [f"block_size {b} exceeds the sequence length {seq_len}"]
        return []

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        return float(local_pairs(seq_len, self.params.block_size, self.params.causal))

    def mask(self, inputs, q, k, rows=None):
        n, dev = inputs.seq_len, q.device
        keys = torch.arange(n, device=dev)
        queries = keys if rows is None else rows.to(dev)
        return allowed(queries[:, None], keys[None, :], self.params.block_size,
                       self.params.causal)[None, None]  # fmt: skip

    def mask_mod(self, inputs: Inputs) -> Mod:
        """``allowed`` for FlexAttention (the block size a tensor: no recompile per value)."""
        size, causal = scalar(self.params.block_size, inputs.device), self.params.causal
        return lambda b, h, i, j: allowed(i, j, size, causal)

    def prepare(self, inputs: Inputs) -> AttentionFn:
        b, causal = self.params.block_size, self.params.causal
        n, m, scale = inputs.seq_len, inputs.query_len, inputs.scale
        dev = torch.device(inputs.device)
        hkv, groups = inputs.kv_heads_count, inputs.heads // inputs.kv_heads_count
        s0, lead, nb = _layout(inputs, b)
        tail = nb * b - lead - m  # padded slots after the last position
        pos = s0 + torch.arange(nb * b, device=dev).view(nb, b)  # [nb, b] position of a slot
        keep = (pos < n)[:, None, :].expand(nb, b, b)  # [nb, b(query), b(key)]
        if causal:
            keep = keep & (pos[:, None, :] <= pos[:, :, None])
        docs = other_document(inputs, pos[:, :, None], pos[:, None, :], s0 + nb * b)
        if docs is not None:
            keep = keep & ~docs
        # SDPA's own causal mask where it is the whole mask (square blocks, top-left aligned)
        is_causal = causal and groups == 1 and docs is None
        needed = not bool(keep.all()) and not is_causal
        keep = fold_mask(keep, groups)[None] if needed else None  # [1, nb, G*b, b]

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            bsz, heads, _, dim = q.shape
            qp = F.pad(q, (0, 0, lead, tail)) if lead or tail else q  # [B, H, nb*b, D]
            k, v = (F.pad(t[:, :, s0:], (0, 0, 0, tail)) if s0 or tail else t for t in (k, v))
            # SDPA's fused kernels want 4-D inputs: batch and key/value heads merged, the
            # blocks as heads, so that the mask broadcasts over them.
            qb = fold_groups(qp.view(bsz, heads, nb, b, dim), hkv)  # [B, Hkv, nb, G*b, D]
            qb = qb.reshape(bsz * hkv, nb, groups * b, dim)  # [B*Hkv, nb, G*b, D]
            kb, vb = (t.reshape(bsz * hkv, nb, b, dim) for t in (k, v))  # [B*Hkv, nb, b, D]
            out = F.scaled_dot_product_attention(
                qb, kb, vb, attn_mask=keep, is_causal=is_causal, scale=scale
            )  # [B*Hkv, nb, G*b, D]
            out = unfold_groups(out.view(bsz, hkv, nb, groups * b, dim), groups)
            return out.reshape(bsz, heads, nb * b, dim)[:, :, lead : lead + m]  # [B, H, M, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """One fused SDPA call over ``nb * b`` slots (as ``fused_attention_bytes``: the output,
        with a backward pass dq, dk, dv and the CPU flash kernel's copy of the output's
        gradient; its per-thread tiles, of one block), plus what the blocks add: the padded
        copies of q, k, v where there is padding or the keys start later (decoding), the folded
        copy of q and the unfolded output (grouped query heads), a boolean mask ``[nb, G*b,
        b]`` (SDPA's copy); with a backward pass the output's gradient padded back to the
        slots (padding), the unfolded one folded (grouped query heads), and full-length dk, dv
        where only the last keys were used."""
        b, groups = self.params.block_size, inputs.heads // inputs.kv_heads_count
        s0, _, nb = _layout(inputs, b)
        m, slots = inputs.query_len, nb * b
        padded, sliced = slots != m, s0 > 0
        vec, kv = rows_bytes(inputs, slots), kv_bytes(inputs) * slots // inputs.seq_len
        cpu = torch.device(inputs.device).type == "cpu"
        tiles = cpu_flash_buffers_bytes(groups * b, b, inputs.head_dim, inputs.requires_grad)
        copies = vec * padded + 2 * kv * (padded or sliced) + 2 * vec * inputs.grouped
        masked = inputs.documents > 1 or padded or (self.params.causal and inputs.grouped)
        mask = nb * groups * b * b * masked
        forward = copies + mask + vec + tiles * cpu
        if not inputs.requires_grad:
            return forward
        grads = 2 * vec + 2 * kv + vec * (padded + inputs.grouped)
        return forward + grads + 2 * kv_bytes(inputs) * sliced


@register
class FlexLocalBlocks(FlexMaskBackend):
    name = "flex-local-blocks"
    description = "LRA's local blocks as a compiled FlexAttention mask_mod, tiles of b"
    pattern = LocalBlocks

    def tile(self, inputs: Inputs) -> int:
        return tile_for(self.params.block_size, inputs.device)
