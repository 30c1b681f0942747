"""Nystromformer attention (Xiong, Zeng, Chakraborty, Tan, Fung, Li and Singh, 2021,
"Nystromformer: A Nystrom-Based Algorithm for Approximating Self-Attention", AAAI,
arXiv:2102.03902, sections 3.2-3.4).

Layout ``[B, H, N, D]`` as in ``harness.measure.backend``; k and v ``[B, Hkv, N, D]``. With
``m`` landmarks, the segment means of the queries and of the keys (``Q~``, ``K~``, ``[m, D]``,
eq. 11 and sec. 3.3):

    F = softmax(Q K~^T / sqrt(D))     [N, m]
    A = softmax(Q~ K~^T / sqrt(D))    [m, m]
    B = softmax(Q~ K^T / sqrt(D))     [m, N]
    out = F pinv(A) (B V)             (eq. 15)

``pinv(A)`` by the paper's iteration (eq. 16, after Razavi et al. 2014), ``--pinv-iterations``
times (6, the paper's and the official code's): ``Z_0 = A^T / (||A||_1 ||A||_inf)`` (the
largest column sum times the largest row sum; the row sums of a softmax are 1), ``Z_{j+1} =
Z_j (13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))) / 4``. The norms are each matrix's own, one
(batch, head) at a time, as the paper defines ``Z_0``; the official code (mlpen/Nystromformer,
"original" option) and nystrom-attention take one maximum over the whole batch and all heads,
which ties a head's result to the others' and converges no faster.

Lengths that m does not divide: segments of ``l = ceil(N / m)`` positions, as if the sequence
were front-padded to a multiple of l (nystrom-attention's convention, which pads at the front to
``m l``) with padded positions masked: they count in no mean and are never attended. The front
segment holds the ``l - p`` real tokens left (p the padding), so no padding is materialised. When
``m l - N >= l`` nystrom-attention's padding fills whole segments, empty landmarks that still
enter its A and B; here they do not exist: there are ``ceil(N / l) <= m`` landmarks (e.g. 50
for N = 100, m = 64), all means of real tokens. ``m = N`` makes every token a landmark:
``F = A = B = softmax(Q K^T / sqrt(D))`` and the output is exact attention up to the
iteration's error (``tests/test_nystromformer.py``).

Computation: ``F (Z (B V))``, the cheapest association (the official code forms ``F Z``, an
``[N, m]`` times ``[m, m]`` product, first): O(N m D + m^3) time, O(N m) memory, never N x N.
The official code's optional depthwise convolution of V added to the output (its "conv"
residual) is left out: it is not attention. Grouped-query attention: ``K~`` per key/value head,
``Q~`` per query head; the G query heads of a key/value head are stacked as G times the rows
(``attention_impls.grouped``), k and v never repeated. No causal variant, decoding or packed
documents (``shape_reasons``, ``why_not``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from attention_impls.footprint import kv_bytes, rows_bytes
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs, expand_heads
from harness.measure.params import param
from harness.measure.reference import reference_dtype
from harness.measure.registry import register
from harness.store.facts import Promise

NO_CAUSAL = (
    "nystromformer has no causal variant: its landmarks are means over segments of all N "
    "positions, so every output depends on later keys"
)


@dataclass(frozen=True)
class NystromformerParams:
    landmarks: int = param(64, "--landmarks", "landmarks m: segment means of q and of k", low=1)
    pinv_iterations: int = param(
        6, "--pinv-iterations", "iterations of the pseudo-inverse of A", low=1
    )


def causal_said(reasons: list[str]) -> list[str]:
    """``reasons`` with the generic "no causal variant" (``AttentionBackend.shape_reasons``)
    saying why."""
    return [NO_CAUSAL if r == "nystromformer has no causal variant" else r for r in reasons]


def segments(n: int, landmarks: int) -> tuple[int, int, int]:
    """Segment length ``l = ceil(N / m)``, the landmarks ``ceil(N / l) <= m`` and the front
    padding ``p < l`` that the first segment lacks."""
    length = -(-n // landmarks)
    count = -(-n // length)
    return length, count, count * length - n


def segment_means(x: torch.Tensor, landmarks: int) -> torch.Tensor:
    """``[.., N, D]`` -> ``[.., m', D]``: the mean of each segment (``segments``), the first
    one short by the front padding."""
    length, count, pad = segments(x.shape[-2], landmarks)
    first = x[..., : length - pad, :].mean(dim=-2, keepdim=True)  # [.., 1, D]
    rest = x[..., length - pad :, :].unflatten(-2, (count - 1, length)).mean(dim=-2)
    return torch.cat([first, rest], dim=-2)  # [.., m', D]


def iterative_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """The paper's iterative Moore-Penrose pseudo-inverse of each ``[m, m]`` matrix of ``a``."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    norms = a.abs().sum(dim=-2).amax(dim=-1) * a.abs().sum(dim=-1).amax(dim=-1)  # [...]
    z = a.transpose(-1, -2) / norms[..., None, None]  # Z_0 = A^T / (||A||_1 ||A||_inf)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def stacked(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """``[B, H, R, D]`` -> ``[B, Hkv, G*R, D]``: the G query heads of a key/value head as rows."""
    return x.reshape(x.shape[0], kv_heads, -1, x.shape[-1])


def nystrom_flops(inputs: Inputs, landmarks: int, iterations: int) -> float:
    """The matmuls of ``F (Z (B V))`` per query head, 2 FLOPs a multiply-add: ``Q K~^T`` and
    ``F W`` (``2 N m D`` each), ``Q~ K^T`` and ``B V`` (``2 m N D`` each), ``Q~ K~^T`` and ``Z
    (B V)`` (``2 m^2 D`` each), four ``m x m`` products per iteration (``8 m^3``); the landmark
    means, softmaxes and the iteration's scalings are not counted."""
    b, h, n, d = inputs.shape
    m = segments(n, landmarks)[1]
    return float(b * h * (8 * n * m * d + 4 * m * m * d + 8 * iterations * m**3))


@register
class Nystromformer(AttentionBackend):
    name = "nystromformer"
    family = "nystromformer"
    description = "Nystrom approximation: segment-mean landmarks, iterative pseudo-inverse"
    Params = NystromformerParams
    promise = Promise(1)
    supports_gqa = True
    why_not: ClassVar[dict[str, str]] = {
        "decoding": "the query landmarks are means over all N queries",
        "documents": "landmark segments straddle documents, and every query sees every landmark",
    }

    def param_errors(self, seq_len: int) -> list[str]:
        p, errors = self.params, []
        if p.landmarks < 1:
            errors.append(f"landmarks must be >= 1, got {p.landmarks}")
        elif p.landmarks > seq_len:
            errors.append(f"landmarks {p.landmarks} exceed the sequence length {seq_len}")
        if p.pinv_iterations < 1:
            errors.append(f"pinv_iterations must be >= 1, got {p.pinv_iterations}")
        return errors

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        return super().not_supported_reasons(inputs) + self.param_errors(inputs.seq_len)

    def shape_reasons(self, inputs: Inputs) -> list[str]:
        return causal_said(super().shape_reasons(inputs))

    def prepare(self, inputs: Inputs) -> AttentionFn:
        m, iterations, scale = self.params.landmarks, self.params.pinv_iterations, inputs.scale
        hkv = inputs.kv_heads_count

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            b, h, n, d = q.shape
            # 1/sqrt(D) goes on the small landmark tensors: on both sides of A it would count
            # twice, so A takes it from K~ alone
            q_land = segment_means(q, m)  # [B, H, m', D]
            k_land = segment_means(k, m) * scale  # [B, Hkv, m', D]
            f = (stacked(q, hkv) @ k_land.transpose(-1, -2)).softmax(dim=-1)  # [B, Hkv, G*N, m']
            a = (stacked(q_land, hkv) @ k_land.transpose(-1, -2)).softmax(dim=-1)  # [., G*m', m']
            scores = stacked(q_land * scale, hkv) @ k.transpose(-1, -2)  # [B, Hkv, G*m', N]
            bv = scores.softmax(dim=-1) @ v  # [B, Hkv, G*m', D]
            z = iterative_pinv(a.view(b, h, -1, a.shape[-1]), iterations)  # [B, H, m', m']
            w = z @ bv.view(b, h, -1, d)  # [B, H, m', D]
            return f.view(b, h, n, -1) @ w  # [B, H, N, D]

        return fn

    def reference(
        self,
        inputs: Inputs,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        compute_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The dense ``[B, H, rows, N]`` matrix ``F pinv(A) B`` of the same landmarks and
        iteration, times V, in ``compute_dtype`` (default float64 on CPU, float32 elsewhere)."""
        compute_dtype = reference_dtype(q.device, compute_dtype)
        m, scale = self.params.landmarks, inputs.scale
        q, k, v = (t.to(compute_dtype) for t in (q, k, v))
        k, v = (expand_heads(t, inputs.heads) for t in (k, v))  # [B, H, N, D]
        q_land, k_land = segment_means(q, m), segment_means(k, m)  # [B, H, m', D]
        f = (q[:, :, rows] @ k_land.transpose(-1, -2) * scale).softmax(dim=-1)
        a = (q_land @ k_land.transpose(-1, -2) * scale).softmax(dim=-1)
        b = (q_land @ k.transpose(-1, -2) * scale).softmax(dim=-1)
        dense = f @ iterative_pinv(a, self.params.pinv_iterations) @ b  # [B, H, rows, N]
        return dense @ v

    def forward_flops(self, inputs: Inputs) -> float:
        return nystrom_flops(inputs, self.params.landmarks, self.params.pinv_iterations)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The forward's peak: F ``[B, H, N, m']`` beside B's scores and softmax ``[B, H, m',
        N]``. A backward pass keeps F and B and, in the softmaxes' backward, holds gradients and
        scores' gradients of both sizes beside them, with the output and dk, dv. The ``[m',
        m']`` matrices of the iteration are not counted. Measured at 2K tokens: within 10%."""
        m = segments(inputs.seq_len, self.params.landmarks)[1]
        big = rows_bytes(inputs, inputs.seq_len, m)
        if not inputs.requires_grad:
            return 3 * big
        return 5 * big + rows_bytes(inputs, inputs.seq_len) + kv_bytes(inputs)
