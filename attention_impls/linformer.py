"""Linformer (Wang, Li, Khabsa, Fang and Ma, 2020, "Linformer: Self-Attention with Linear
Complexity", arXiv:2006.04768, section 4, eq. 7): keys and values are projected along the
sequence to ``k`` rows before softmax attention. Layout ``[B, H, N, D]`` as in
``harness.measure.backend``; q and the output ``[B, H, M, D]``, k and v ``[B, Hkv, N, D]``.

With projections ``E, F`` of shape ``[k, N]``::

    out = softmax(Q (E K)^T / sqrt(D)) (F V)

an ``[M, k]`` score matrix instead of ``[M, N]``: O(N k) time and memory, linear in N at a
fixed ``k``. The paper learns E and F; here they are random, as the paper's model has them
before training and as its analysis draws them (section 4, theorem 2): each drawn in ``prepare``
on CPU from a generator of its own seeded by ``inputs.seed`` (``projections``), with the
initialisation of the official code (fairseq's ``MultiheadLinearAttention``: Xavier uniform,
gain ``1/sqrt(2)``, i.e. uniform on ``±sqrt(3 / (N + k))``). Sharing (section 4, "additional
efficiency techniques"): headwise, one E and one F for every head and batch element, E and F
distinct (the official code's default); key-value sharing (E = F) and layerwise sharing (one
layer here) are not offered.

Shapes: grouped-query attention (E K and F V are made once per key/value head and shared by its
query heads) and decoding (the projection runs over all N keys; the M queries are any rows).
Causal attention is refused: each projected row mixes every position, so every query would see
future tokens, and the paper defines no causal variant. So are packed documents: the projected
rows mix the keys of every document. The check compares with ``reference``, the dense formula
above with the same E and F, computed in float64 on CPU; ``err_vs_full`` says how far it is
from exact attention (far: the projections are untrained).
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

DEFAULT_K = 256  # the paper's usual k (tables 1-3: 128, 256; n = 512 to 4096)
# XORed into the seed: E and F get a stream of their own, not the bits that drew q, k, v
STREAM = 0x4C696E66  # "Linf"


@dataclass(frozen=True)
class LinformerParams:
    proj_len: int | None = param(
        None, "--proj-len", "projected length k: keys and values become k rows "
        "(default: min(256, N))", low=1,
    )  # fmt: skip


def proj_len_at(params: LinformerParams, n: int) -> int:
    return params.proj_len or min(DEFAULT_K, n)


def projections(inputs: Inputs, params: LinformerParams) -> tuple[torch.Tensor, torch.Tensor]:
    """``E, F`` ``[k, N]``, i.i.d. uniform on ``±sqrt(3 / (N + k))`` (the official code's Xavier
    initialisation, gain ``1/sqrt(2)``), drawn in float64 on CPU from ``inputs.seed`` so that
    every device and dtype gets the same matrices (rounded to the inputs' dtype)."""
    n = inputs.seq_len
    k = proj_len_at(params, n)
    gen = torch.Generator().manual_seed(inputs.seed ^ STREAM)
    bound = (3.0 / (n + k)) ** 0.5
    e, f = ((torch.rand(k, n, generator=gen, dtype=torch.float64) * 2 - 1) * bound for _ in "EF")
    return tuple(t.to(device=inputs.device, dtype=inputs.dtype) for t in (e, f))


def project(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``P x`` along the sequence: ``[k, N]`` times ``[B, Hkv, N, D]`` -> ``[B, Hkv, k, D]``."""
    b, h, n, d = x.shape
    flat = x.permute(2, 0, 1, 3).reshape(n, b * h * d)  # [N, B*Hkv*D]: one matmul for all heads
    return (p @ flat).view(-1, b, h, d).permute(1, 2, 0, 3)  # [B, Hkv, k, D]


@register
class Linformer(AttentionBackend):
    name = "linformer"
    family = "linformer"
    description = "keys and values projected along the sequence to k rows (E K, F V)"
    Params = LinformerParams
    promise = Promise(1)  # at a fixed k
    supports_gqa = True
    supports_decoding = True  # non-causal: every query sees the same k projected rows
    why_not: ClassVar[dict[str, str]] = {
        "documents": "each projected row mixes the keys of every document",
    }

    def shape_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().shape_reasons(inputs)
        why = ": each projected row of E K mixes every position, future ones included"
        return [r + why if r.endswith("no causal variant") else r for r in reasons]

    def param_errors(self, seq_len: int) -> list[str]:
        k = self.params.proj_len
        if k is not None and k < 1:
            return [f"proj_len {k} must be at least 1"]
        if k is not None and k > seq_len:
            return [f"proj_len {k} exceeds the length {seq_len}: projecting up saves nothing"]
        return []

    def prepare(self, inputs: Inputs) -> AttentionFn:
        e, f = projections(inputs, self.params)
        scale, hkv = inputs.scale, inputs.kv_heads_count

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            b, h, m, d = q.shape
            ek, fv = project(e, k), project(f, v)  # [B, Hkv, k, D] each
            # The G query heads of a key/value head are consecutive: G*M rows against its E K.
            qg = (q * scale).reshape(b, hkv, -1, d)  # [B, Hkv, G*M, D]
            probs = (qg @ ek.transpose(-1, -2)).softmax(dim=-1)  # [B, Hkv, G*M, k]
            return (probs @ fv).view(b, h, m, d)  # [B, H, M, D]

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
        """``softmax(Q (E K)^T / sqrt(D)) (F V)`` for q's ``rows``, with the kernel's E and F,
        written as the formula (E K as one matmul), in ``compute_dtype`` (float64 on CPU by
        default); differentiable."""
        compute_dtype = reference_dtype(q.device, compute_dtype)
        e, f = (t.to(q.device, compute_dtype) for t in projections(inputs, self.params))
        q, k, v = (t.to(compute_dtype) for t in (q[:, :, rows.to(q.device)], k, v))
        k, v = (expand_heads(t, q.shape[1]) for t in (k, v))  # [B, H, N, D]
        scores = q @ (e @ k).transpose(-1, -2) * inputs.scale  # [B, H, rows, k]
        return scores.softmax(dim=-1) @ (f @ v)  # [B, H, rows, D]

    def forward_flops(self, inputs: Inputs) -> float:
        """The four matmuls of the formula, 2 FLOPs per multiply-add: ``E K`` and ``F V``, ``2 k
        N D`` each per batch element and key/value head (made once for its query heads), then
        ``Q (E K)^T`` and ``P (F V)``, ``2 M k D`` each per batch element and query head. The
        softmax and the scaling are not counted (``harness.measure.flops``)."""
        b, h, m, d = inputs.shape
        n, k = inputs.seq_len, proj_len_at(self.params, inputs.seq_len)
        return float(b * inputs.kv_heads_count * 4 * k * n * d + b * h * 4 * m * k * d)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Forward: E K and F V ``[B, Hkv, k, D]``, the scaled q, then the scores and their
        softmax ``[B, H, M, k]`` together, or the softmax and the output. Backward: in the
        softmax's gradient the saved softmax, its gradient and the scores' gradient, beside the
        scaled q, the output and E K, F V with their gradients; or, once those are freed, dq
        and the output beside the key side: the permuted copy of k or v, its gradient, dk,
        dv."""
        m, k = inputs.query_len, proj_len_at(self.params, inputs.seq_len)
        projected = kv_bytes(inputs) * k // inputs.seq_len  # [B, Hkv, k, D]
        scores, vec = rows_bytes(inputs, m, k), rows_bytes(inputs, m)
        if not inputs.requires_grad:
            return 2 * projected + vec + max(2 * scores, scores + vec)
        return max(3 * scores + 2 * vec + 4 * projected, 2 * vec + 4 * kv_bytes(inputs))
