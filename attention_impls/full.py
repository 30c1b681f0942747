"""Full (dense) softmax attention, the quadratic baseline (Vaswani et al., 2017, "Attention Is
All You Need", eq. 1): ``softmax(q k^T / sqrt(D)) v`` over every (query, key) pair.

Layout ``[B, H, N, D]``; q and the output ``[B, H, M, D]``, k and v ``[B, Hkv, N, D]``
(``harness.measure.inputs``: grouped-query attention, decoding, packed documents, all computed
here). ``full-naive``, the family's plain backend, materialises the ``[B, H, M, N]`` score
matrix. The kernels hold it for the pattern (``Kernel``, composition):
``full-sdpa`` calls ``torch.nn.functional.scaled_dot_product_attention`` and lets PyTorch pick
its kernel (flash or memory-efficient ones avoid the N x N matrix); ``xformers-full`` calls
xformers' ``memory_efficient_attention`` (``attention_impls.xformers_ops``); the SDPA kernels
pinned one by one are ``attention_impls.sdpa_kernels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from attention_impls.flex import FlexMaskBackend
from attention_impls.footprint import fused_attention_bytes, mask_bytes, rows_bytes
from attention_impls.xformers_ops import XformersKernel
from harness.measure.backend import AttentionBackend, AttentionFn, Kernel
from harness.measure.inputs import Inputs, expand_heads
from harness.measure.params import param
from harness.measure.registry import register
from harness.store.facts import Promise


@dataclass(frozen=True)
class FullParams:
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)


def causal_mask(inputs: Inputs, rows: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """``[1, 1, M, N]``: keys at or before each query's position; ``rows`` are the queries'
    positions (all N when None)."""
    n = inputs.seq_len
    q_pos = torch.arange(n, device=device) if rows is None else rows.to(device)
    return (torch.arange(n, device=device)[None, :] <= q_pos[:, None])[None, None]  # [1, 1, M, N]


def query_positions(inputs: Inputs, device: torch.device | str) -> torch.Tensor:
    """``[M]``: the position among the keys of each row of q (the last M when decoding)."""
    return torch.arange(inputs.query_len, device=device) + inputs.query_offset


def masked(inputs: Inputs, causal: bool) -> bool:
    """Whether the pairs full attention keeps for q's rows are not all of them."""
    return inputs.documents > 1 or (causal and inputs.query_len > 1)


def allowed_pairs(inputs: Inputs, causal: bool, device: torch.device | str) -> torch.Tensor | None:
    """``[M, N]`` boolean of the pairs full attention keeps for q's rows: causal bottom-right
    (row r sees keys up to ``N - M + r``) and within a document; None where every pair is kept
    (one document and not causal, or causal with a single query, the last, which sees all)."""
    if not masked(inputs, causal):
        return None
    pos = query_positions(inputs, device)  # [M]
    keys = torch.arange(inputs.seq_len, device=device)  # [N]
    allowed = torch.ones(inputs.query_len, inputs.seq_len, dtype=torch.bool, device=device)
    if causal:
        allowed &= keys[None, :] <= pos[:, None]
    if inputs.documents > 1:
        doc = inputs.document_ids(device)  # [N]
        allowed &= doc[pos][:, None] == doc[None, :]
    return allowed  # [M, N]


def sdpa_is_causal(inputs: Inputs, causal: bool) -> bool:
    """Whether ``is_causal`` computes the case: its triangle is aligned top-left (query r sees
    keys up to r), right only where M = N, and it takes no other mask."""
    return causal and not inputs.decoding and inputs.documents == 1


def sdpa_arguments(inputs: Inputs, causal: bool) -> dict[str, Any]:
    """Keyword arguments of ``F.scaled_dot_product_attention`` for the case.

    Where ``is_causal`` cannot say it (``sdpa_is_causal``), the pairs are an explicit boolean
    ``attn_mask`` ``[M, N]`` (``allowed_pairs``), built once here: the dense kernel with a mask.
    ``torch.nn.attention.bias.causal_lower_right`` is not used: on CPU it materialises the same
    mask on every call, and its fused CUDA branches drop ``enable_gqa``."""
    args: dict[str, Any] = {}
    if inputs.grouped:  # only then: torch before 2.5 has no such argument
        args["enable_gqa"] = True
    if sdpa_is_causal(inputs, causal):
        args["is_causal"] = True
    elif masked(inputs, causal):
        args["attn_mask"] = allowed_pairs(inputs, causal, inputs.device)
    return args


def sdpa_mask_bytes(inputs: Inputs, causal: bool) -> int:
    """The additive ``[M, N]`` copy that ``scaled_dot_product_attention`` makes of a boolean
    ``attn_mask`` (``aten.where``, seen on CPU for MATH and FLASH_ATTENTION; it lives through the
    call and is saved for the backward). On CPU the flash kernel takes the mask, so a mask costs
    only this copy; on CUDA the flash kernel takes none and PyTorch turns to memory-efficient
    attention (or, should that refuse the case, MATH with its M x N scores): unmeasured."""
    if sdpa_is_causal(inputs, causal) or not masked(inputs, causal):
        return 0
    return mask_bytes(inputs, inputs.element_size)


def score_matrices_bytes(inputs: Inputs) -> int:
    """The ``[B, H, M, N]`` matrices materialised attention holds at its peak: two in the forward
    pass (the scores and their softmax; the unscaled product and the scaled scores are the two
    for a moment before that), three with a backward pass (the saved softmax, its gradient and
    the gradient of the scores, alive together in the softmax's backward)."""
    b, h, m, _ = inputs.shape
    matrices = 3 if inputs.requires_grad else 2
    return matrices * b * h * m * inputs.seq_len * inputs.element_size


@register
class FullNaive(AttentionBackend):
    yardstick = True
    name = "full-naive"
    family = "full"
    description = "materialised q k^T, softmax, times v"
    Params = FullParams
    promise = Promise(2)
    supports_gqa = supports_decoding = supports_documents = True

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        # Every pair, or the lower triangle with its diagonal (query i sees keys 0..i).
        n = seq_len
        return float(n * (n + 1) // 2 if self.params.causal else n * n)

    def mask(self, inputs, q, k, rows=None):
        if self.params.causal:
            return causal_mask(inputs, rows, q.device)
        return super().mask(inputs, q, k, rows)

    def mask_mod(self, inputs: Inputs):
        """The pattern for FlexAttention: every pair, or ``j <= i`` when causal."""
        if self.params.causal:
            return lambda b, h, i, j: j <= i
        return lambda b, h, i, j: j >= 0  # a tensor that is always True

    def prepare(self, inputs: Inputs) -> AttentionFn:
        scale = inputs.scale
        allowed = allowed_pairs(inputs, self.params.causal, inputs.device)  # [M, N] or None

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k, v = (expand_heads(t, q.shape[1]) for t in (k, v))  # [B, H, N, D]
            scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, M, N]
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            return scores.softmax(dim=-1) @ v  # [B, H, M, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The M x N matrices (``score_matrices_bytes``) and the tensors beside them: the output
        ``[B, H, M, D]`` and, with a backward pass, dv ``[B, H, N, D]`` (computed before the
        softmax's gradient). A mask adds the ``[M, N]`` boolean ``~allowed`` of the forward;
        grouped-query attention the copies of k and v repeated to ``[B, H, N, D]`` (kept for
        the backward)."""
        m, n = inputs.query_len, inputs.seq_len
        vectors = rows_bytes(inputs, m) + (rows_bytes(inputs, n) if inputs.requires_grad else 0)
        flip = masked(inputs, self.params.causal) and not inputs.requires_grad
        flipped = mask_bytes(inputs) if flip else 0
        repeated = 2 * rows_bytes(inputs, n) if inputs.grouped else 0
        return score_matrices_bytes(inputs) + vectors + flipped + repeated


@register
class FullSdpa(Kernel):
    yardstick = True
    name = "full-sdpa"
    description = "torch scaled_dot_product_attention, kernel chosen by PyTorch"
    pattern = FullNaive
    supports_gqa = supports_decoding = supports_documents = True

    def prepare(self, inputs: Inputs) -> AttentionFn:
        args = sdpa_arguments(inputs, self.params.causal)

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, **args)  # [B, H, M, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """PyTorch picks a fused kernel for these inputs (on CPU its flash kernel, measured; on
        CUDA flash or memory-efficient, unmeasured): see ``fused_attention_bytes``. A boolean
        mask is turned into an additive ``[M, N]`` mask of the inputs' dtype on every call
        (``sdpa_mask_bytes``)."""
        return fused_attention_bytes(inputs) + sdpa_mask_bytes(inputs, self.params.causal)


@register
class FlexFull(FlexMaskBackend):
    """Full attention as compiled FlexAttention: with packed documents its BlockMask skips the
    tiles between documents (FlexAttention's document masking), the sparse-aware counterpart of
    ``full-sdpa`` with a dense boolean mask; decoding and grouped-query heads as in every Flex
    kernel (``FlexMaskBackend``)."""

    name = "flex-full"
    description = "full attention as compiled FlexAttention (skips tiles between documents)"
    pattern = FullNaive


@register
class XformersFull(XformersKernel):
    name = "xformers-full"
    description = "xformers memory_efficient_attention, no bias or LowerTriangularMask"
    pattern = FullNaive
