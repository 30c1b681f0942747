"""Full (dense) softmax attention, the quadratic baseline (Vaswani et al., 2017, "Attention Is
All You Need", eq. 1): ``softmax(q k^T / sqrt(D)) v`` over every (query, key) pair.

Layout ``[B, H, N, D]``. ``full-naive``, the family's plain backend, materialises the
``[B, H, N, N]`` score matrix. The kernels hold it for the pattern (``Kernel``, composition):
``full-sdpa`` calls ``torch.nn.functional.scaled_dot_product_attention`` and lets PyTorch pick
its kernel (flash or memory-efficient ones avoid the N x N matrix); ``xformers-full`` calls
xformers' ``memory_efficient_attention`` (``attention_impls.xformers_ops``); the SDPA kernels
pinned one by one are ``attention_impls.sdpa_kernels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attention_impls.footprint import fused_attention_bytes, rows_bytes
from attention_impls.xformers_ops import XformersKernel
from harness.measure.backend import AttentionBackend, AttentionFn, Kernel
from harness.measure.inputs import Inputs
from harness.measure.params import param
from harness.measure.registry import register
from harness.store.facts import Promise


@dataclass(frozen=True)
class FullParams:
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)


def causal_mask(inputs: Inputs, rows: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    n = inputs.seq_len
    q_pos = torch.arange(n, device=device) if rows is None else rows.to(device)
    return (torch.arange(n, device=device)[None, :] <= q_pos[:, None])[None, None]  # [1, 1, M, N]


def score_matrices_bytes(inputs: Inputs) -> int:
    """The ``[B, H, N, N]`` matrices materialised attention holds at its peak: two in the forward
    pass (the scores and their softmax; the unscaled product and the scaled scores are the two
    for a moment before that), three with a backward pass (the saved softmax, its gradient and
    the gradient of the scores, alive together in the softmax's backward)."""
    b, h, n, _ = inputs.shape
    matrices = 3 if inputs.requires_grad else 2
    return matrices * b * h * n * n * inputs.element_size


@register
class FullNaive(AttentionBackend):
    yardstick = True
    name = "full-naive"
    family = "full"
    description = "materialised q k^T, softmax, times v"
    Params = FullParams
    promise = Promise(2)

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        # Every pair, or the lower triangle with its diagonal (query i sees keys 0..i).
        n = seq_len
        return float(n * (n + 1) // 2 if self.params.causal else n * n)

    def mask(self, inputs, q, k, rows=None):
        if self.params.causal:
            return causal_mask(inputs, rows, q.device)
        return super().mask(inputs, q, k, rows)

    def prepare(self, inputs: Inputs) -> AttentionFn:
        scale = inputs.scale
        causal = None
        if self.params.causal:
            causal = causal_mask(inputs, None, torch.device(inputs.device))  # [1, 1, N, N]

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            scores = (q @ k.transpose(-1, -2)) * scale  # [B, H, N, N]
            if causal is not None:
                scores = scores.masked_fill(~causal, float("-inf"))
            return scores.softmax(dim=-1) @ v  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The N x N matrices (``score_matrices_bytes``) and the ``[B, H, N, D]`` tensors beside
        them: the output, and with a backward pass dv (computed before the softmax's gradient).
        Causal adds the ``[N, N]`` boolean ``~causal`` of the forward."""
        n = inputs.seq_len
        vectors = rows_bytes(inputs, n) * (2 if inputs.requires_grad else 1)
        flipped_mask = n * n if self.params.causal and not inputs.requires_grad else 0
        return score_matrices_bytes(inputs) + vectors + flipped_mask


@register
class FullSdpa(Kernel):
    yardstick = True
    name = "full-sdpa"
    description = "torch scaled_dot_product_attention, kernel chosen by PyTorch"
    pattern = FullNaive

    def prepare(self, inputs: Inputs) -> AttentionFn:
        causal = self.params.causal

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """PyTorch picks a fused kernel for these inputs (on CPU its flash kernel, measured; on
        CUDA flash or memory-efficient, unmeasured): see ``fused_attention_bytes``."""
        return fused_attention_bytes(inputs)


@register
class XformersFull(XformersKernel):
    name = "xformers-full"
    description = "xformers memory_efficient_attention, no bias or LowerTriangularMask"
    pattern = FullNaive
