"""Strided attention of the Sparse Transformer (Child, Gray, Radford and Sutskever, 2019,
"Generating Long Sequences with Sparse Transformers", arXiv:1904.10509, section 4.2). Layout
``[B, H, N, D]`` as in ``harness.measure.backend``.

Pattern, with stride ``l`` (by default ``ceil(sqrt(N))``, the paper's choice ``l ≈ √N``):
query ``i`` attends key ``j`` iff ``|i - j| <= l`` (the previous and next ``l`` positions) or
``(i - j) mod l == 0`` (every ``l``-th position); when causal, also ``j <= i``: the paper's
``A(1) = {t, ..., i}, t = max(0, i - l)`` and ``A(2) = {j : (i - j) mod l = 0}``, both heads'
sets joined in one softmax. The non-causal version is the same pattern made symmetric.
For N = 8, l = 3, causal (``x`` attended)::

    x . . . . . . .
    x x . . . . . .
    x x x . . . . .
    x x x x . . . .
    . x x x x . . .
    . . x x x x . .
    x . . x x x x .
    . x . . x x x x

Implementation, O(N (l + N / l)) = O(N^1.5) time and memory at the default stride (never an
N x N tensor): the sequence is padded to ``m * l`` positions and seen two ways, as ``m`` blocks
of ``l`` consecutive positions (the window: block ``I`` scores blocks ``I-1, I, I+1``) and as
``l`` residue classes of ``m`` positions (the stride: class ``r`` is dense within itself). Class
keys within one step (``j = i, i ± l``) are in the window already and are masked in the class
part, so that one softmax over both counts every pair once.

Grouped-query attention: the ``G`` query heads of a key/value head are stacked as ``G`` times the
rows of each block and class (``attention_impls.grouped``), against the same key copies. Packed
documents: both precomputed masks also drop pairs of different documents. Decoding is refused:
the blocks and classes lay out all ``N`` query rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from attention_impls.flex import FlexMaskBackend
from attention_impls.footprint import rows_bytes
from attention_impls.grouped import fold_groups, fold_mask, kv_share, other_document, unfold_groups
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import param
from harness.measure.registry import register
from harness.store.facts import Promise


@dataclass(frozen=True)
class StridedParams:
    stride: int | None = param(
        None, "--stride", "stride l (default: ceil(sqrt(N)) at each length)", low=1
    )
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)


def stride_at(params: StridedParams, n: int) -> int:
    return params.stride or (math.isqrt(n - 1) + 1 if n > 1 else 1)  # ceil(sqrt(n))


def allowed(i: torch.Tensor, j: torch.Tensor, stride: int | torch.Tensor, causal: bool):
    """The pattern on (broadcast) query and key positions: the one definition that the dense
    reference (``Strided.mask``) and the Flex kernel's ``mask_mod`` both evaluate."""
    diff = i - j
    keep = (diff.abs() <= stride) | (diff % stride == 0)
    return keep & (diff >= 0) if causal else keep


def strided_pairs(n: int, s: int, causal: bool) -> int:
    """Attended pairs, in O(N): window keys plus class keys less the (up to 3) in both."""
    i = np.arange(n, dtype=np.int64)  # [N]
    if causal:
        window = np.minimum(i, s) + 1
        klass = i // s + 1
        both = 1 + (i >= s)
    else:
        window = np.minimum(i, s) + np.minimum(n - 1 - i, s) + 1
        klass = (n - 1 - i % s) // s + 1
        both = 1 + (i >= s) + (i + s <= n - 1)
    return int((window + klass - both).sum())


@register
class Strided(AttentionBackend):
    name = "strided"
    family = "strided"
    description = "Sparse Transformer strided pattern: local window plus every l-th position"
    is_sparse = True
    Params = StridedParams
    # at the default stride √N; a fixed stride s costs N (2l + N / s): quadratic as N grows
    promise = Promise(1.5)
    supports_gqa = True
    supports_documents = True
    why_not: ClassVar[dict[str, str]] = {
        "decoding": "its blocks and classes lay out all N query rows"
    }

    def param_errors(self, seq_len: int) -> list[str]:
        t = self.params.stride
        if t is not None and t < 1:
            return [f"stride {t} must be at least 1"]
        if t is not None and t > seq_len:  # its blocks of t positions would be mostly padding
            return [f"stride {t} is longer than the length {seq_len}: every pair is in the window"]
        return []

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        s = stride_at(self.params, seq_len)
        return float(strided_pairs(seq_len, s, self.params.causal))

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, dev = inputs.seq_len, q.device
        keys = torch.arange(n, device=dev)
        queries = keys if rows is None else rows.to(dev)
        stride = stride_at(self.params, n)
        return allowed(queries[:, None], keys[None, :], stride, self.params.causal)[None, None]

    def mask_mod(self, inputs: Inputs):
        """``allowed`` for FlexAttention (stride a tensor: no recompile per value)."""
        stride = torch.tensor(stride_at(self.params, inputs.seq_len), device=inputs.device)
        causal = self.params.causal
        return lambda b, h, i, j: allowed(i, j, stride, causal)

    def prepare(self, inputs: Inputs) -> AttentionFn:
        n, dev, causal = inputs.seq_len, torch.device(inputs.device), self.params.causal
        s = stride_at(self.params, n)  # the paper's s
        m = -(-n // s)
        n_pad = m * s
        sides = 2 if causal else 3  # key blocks I-1, I (and I+1)
        pos = torch.arange(n_pad, device=dev).view(m, s)  # [m, s] position of block I, offset r
        # Window part: key slot t of query block I is position (I - 1) * s + t.
        k_pos = (torch.arange(m, device=dev)[:, None] - 1) * s + torch.arange(sides * s, device=dev)
        diff = pos[:, :, None] - k_pos[:, None, :]  # [m, s, sides*s]
        in_window = (diff.abs() <= s) & (k_pos[:, None, :] >= 0) & (k_pos[:, None, :] < n)
        window_blocked = ~(in_window & (diff >= 0) if causal else in_window)  # [m, s, sides*s]
        docs = other_document(inputs, pos[:, :, None], k_pos[:, None, :], n_pad)
        if docs is not None:
            window_blocked |= docs
        # Class part: query a and key b of class r are positions r + a s and r + b s; |a - b| < 2
        # is in the window already.
        a = torch.arange(m, device=dev)
        step = a[:, None] - a[None, :]  # [m(a), m(b)]
        real_key = (a[None, :] * s + torch.arange(s, device=dev)[:, None]) < n  # [s(r), m(b)]
        keep = (step.abs() >= 2) & (step >= 0 if causal else True)
        class_blocked = ~(keep[None] & real_key[:, None, :])  # [s, m, m]
        class_blocked = class_blocked.transpose(0, 1)  # [m(a), s(r), m(b)]
        class_key = a[None, None, :] * s + torch.arange(s, device=dev)[None, :, None]  # [1, s, m]
        docs = other_document(inputs, pos[:, :, None], class_key, n_pad)  # [m(a), s(r), m(b)]
        if docs is not None:
            class_blocked = class_blocked | docs
        # one mask row per query row of each of the G query heads folded into a block
        hkv, groups = inputs.kv_heads_count, inputs.heads // inputs.kv_heads_count
        window_blocked = fold_mask(window_blocked, groups)  # [m, G*s, sides*s]
        class_blocked = fold_mask(class_blocked, groups)  # [m(a), G*s(r), m(b)]
        scale = inputs.scale

        def swap(x: torch.Tensor, rows: int) -> torch.Tensor:
            """Folded rows ``[B, Hkv, X, G*Y, Z]`` to ``[B, Hkv, Y, G*X, Z]`` (``Y = rows``): block
            rows to class rows and back; a view (a transpose) when G == 1."""
            x = x.unflatten(3, (groups, rows))  # [B, Hkv, X, G, Y, Z]
            return x.permute(0, 1, 4, 3, 2, 5).flatten(3, 4)  # [B, Hkv, Y, G*X, Z]

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            b, h, _, d = q.shape

            def blocks(x: torch.Tensor, front: int = 0, back: int = 0) -> torch.Tensor:
                x = F.pad(x, (0, 0, front * s, n_pad - n + back * s))  # [B, h, (m+f+b)*s, D]
                return x.view(b, x.shape[1], m + front + back, s, d)  # [B, h, m+f+b, s, D]

            def neighbours(x: torch.Tensor) -> torch.Tensor:
                x = blocks(x, 1, sides - 2)  # [B, Hkv, m + sides - 1, s, D]
                return torch.cat([x[:, :, t : t + m] for t in range(sides)], dim=-2)

            def classes(x: torch.Tensor) -> torch.Tensor:
                return blocks(x).transpose(2, 3)  # [B, h, s(r), m(a), D]

            # The G query heads of a key/value head are G*s rows of each block (G*m of a class).
            qb = blocks(q * scale)  # [B, H, m, s, D]
            vn = neighbours(v)  # [B, Hkv, m, sides*s, D]
            window = fold_groups(qb, hkv) @ neighbours(k).transpose(-1, -2)  # [B, Hkv, m, G*s, .]
            window.masked_fill_(window_blocked, float("-inf"))  # [B, Hkv, m, G*s, sides*s]
            strided = fold_groups(qb.transpose(2, 3), hkv) @ classes(k).transpose(-1, -2)
            strided = swap(strided, m)  # [B, Hkv, s, G*m(a), m(b)] -> [B, Hkv, m(a), G*s(r), m(b)]
            strided = strided.masked_fill(class_blocked, float("-inf"))
            probs = torch.cat([window, strided], dim=-1).softmax(dim=-1)
            out = probs[..., : sides * s] @ vn  # [B, Hkv, m, G*s, D]
            p_class = swap(probs[..., sides * s :], s)  # [B, Hkv, s, G*m(a), m(b)]
            out = out + swap(p_class @ classes(v), m)  # [B, Hkv, m, G*s, D]
            out = unfold_groups(out, groups)  # [B, H, m, s, D]
            return out.reshape(b, h, n_pad, d)[:, :, :n]  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The scores of both parts ``[B, H, N_pad, sides*l + m]``, their concatenation and its
        softmax, the neighbour copies of k and v; the backward holds about three score tensors
        and the saved copies again."""
        n = inputs.seq_len
        s = stride_at(self.params, n)
        m = -(-n // s)
        width = (2 if self.params.causal else 3) * s + m
        scores = rows_bytes(inputs, m * s, width)
        # the neighbour copies of k and v have Hkv heads; q and the output H
        copies = int(2 * rows_bytes(inputs, m * (width - m)) * kv_share(inputs))
        copies += 2 * rows_bytes(inputs, m * s)
        if not inputs.requires_grad:
            return 3 * scores + copies
        return 4 * scores + 2 * copies


@register
class FlexStrided(FlexMaskBackend):
    name = "flex-strided"
    description = "Sparse Transformer strided pattern as a compiled FlexAttention mask_mod"
    pattern = Strided
