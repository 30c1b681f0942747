"""lucidrains' nystrom-attention (``nystrom_attention.NystromAttention``, checked with 0.0.14)
driven on our q, k, v ``[B, H, N, D]``: Nystromformer attention (Xiong et al., 2021,
"Nystromformer: A Nystrom-Based Algorithm for Approximating Self-Attention", AAAI,
arXiv:2102.03902, section 3) as people run it; the family is ``attention_impls.nystromformer``.

Parameters: ``--landmarks m`` -> ``num_landmarks``, ``--pinv-iterations`` -> ``pinv_iterations``;
``dim_head = D``, ``heads = H``, ``residual=False`` (no depthwise convolution of v), dropout 0.
``NystromAttention`` is a whole layer: it computes q, k, v from its input x with ``to_qkv`` and
projects the heads' output with ``to_out``. Both are replaced, so that no projection is timed:
``to_qkv`` by a module that returns our q, k, v laid out as its ``[B, N, 3 H D]`` (front-padded
with zeros to the length it asks for, which is what its bias-free linear layer gives for its
zero padding of x), ``to_out`` by the identity; x is an empty ``[B, N, 0]`` tensor. The row's
time includes the one copy of q, k, v into that layout (O(N D)), its own ``[B, N, H D]`` output
turned back to ``[B, H, N, D]`` as a view, and for grouped-query attention k and v repeated to
the H heads first (it has one head count).

Its formula, in ``reference`` (``nystrom_reference``), and how it deviates from ours:
- padding: a length that m does not divide is padded at the front to ``m l``, ``l = ceil(N /
  m)``, with ``m l - N`` zeros. Given a mask, it masks them: out of the landmark means (divisor
  the real tokens + 1e-8) and out of F and B; ``prepare`` passes an all-true mask exactly then
  (without one the zeros would be attended as keys). Where the padding fills whole segments
  (``m l - N >= l``, e.g. N = 100, m = 64: 14 segments of zeros) those landmarks are empty:
  their rows of A and B are uniform (softmax of a row all masked), and they enter ``pinv(A)``
  and, through it, every output; ours has only the ``ceil(N / l)`` real landmarks;
- ``Z_0`` divides by one maximum row sum and column sum over the whole batch and all heads
  (``torch.max``), ours by each matrix's own;
- the scale 1/sqrt(D) is applied to q before the landmark means, as ours (equivalent);
- it forms ``(F Z)(B V)``: an ``[N, m] x [m, m]`` product per head more than ours.
Decoding is refused (q, k and v come from one x); packed documents and causal attention as the
family. Half precision is refused: its iteration adds a float32 identity to the half products.
FLOPs are the family's count (``Nystromformer.forward_flops``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from attention_impls.footprint import rows_bytes
from attention_impls.nystromformer import Nystromformer, causal_said
from attention_impls.peers.optional import missing
from harness.measure.backend import AttentionFn, Kernel
from harness.measure.inputs import Inputs, expand_heads
from harness.measure.reference import reference_dtype
from harness.measure.registry import register

DISTRIBUTION, MODULE = "nystrom-attention", "nystrom_attention"
MASK_EPS = 1e-8  # NystromAttention's eps, added to the masked landmark divisor


class Given(torch.nn.Module):
    """Stands for ``to_qkv``: returns ``qkv [B, N, 3 H D]``, set before each call, front-padded
    with zeros to the length of the padded x it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.qkv is not None
        pad = x.shape[1] - self.qkv.shape[1]
        return F.pad(self.qkv, (0, 0, pad, 0)) if pad else self.qkv


def lucidrains_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """``moore_penrose_iter_pinv``: the paper's iteration, ``Z_0`` scaled by the largest row
    and column sums over every matrix of ``a`` at once."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    z = a.transpose(-1, -2) / (a.abs().sum(dim=-1).max() * a.abs().sum(dim=-2).max())
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, m: int, iterations: int
) -> torch.Tensor:
    """nystrom-attention's formula, dense, for query ``rows``: q, k, v ``[B, H, N, D]``."""
    n, d = q.shape[-2:]
    length = -(-n // m)
    pad = m * length - n if n % m else 0
    q, k, v = (F.pad(t, (0, 0, pad, 0)) for t in (q, k, v))  # [B, H, m l, D]
    q = q * d**-0.5
    real = torch.arange(m * length, device=q.device) >= pad  # [m l]
    count = real.view(m, length).sum(dim=-1)  # [m]
    divisor = (count + MASK_EPS)[:, None] if pad else length
    q_land, k_land = (t.unflatten(-2, (m, length)).sum(dim=-2) / divisor for t in (q, k))
    sim1 = q[:, :, rows + pad] @ k_land.transpose(-1, -2)  # [B, H, rows, m]
    sim2 = q_land @ k_land.transpose(-1, -2)  # [B, H, m, m]
    sim3 = q_land @ k.transpose(-1, -2)  # [B, H, m, m l]
    if pad:
        low = -torch.finfo(q.dtype).max
        full = count > 0  # [m] landmarks with a real token
        sim1 = sim1.masked_fill(~full[None, :], low)  # the rows are real queries
        sim2 = sim2.masked_fill(~(full[:, None] & full[None, :]), low)
        sim3 = sim3.masked_fill(~(full[:, None] & real[None, :]), low)
    f, a, b = (s.softmax(dim=-1) for s in (sim1, sim2, sim3))
    return f @ lucidrains_pinv(a, iterations) @ b @ v  # [B, H, rows, D]


@register
class LucidrainsNystrom(Kernel):
    name = "lucidrains-nystrom"
    description = "nystrom-attention NystromAttention (lucidrains), projections replaced"
    implementation = DISTRIBUTION
    pattern = Nystromformer
    preload = (MODULE,)
    dtypes = frozenset({torch.float32, torch.float64})
    supports_gqa = True  # by repeating k and v
    why_not: ClassVar[dict[str, str]] = {
        **Nystromformer.why_not,
        "decoding": "NystromAttention computes q, k and v from one input",
    }

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs) + self.plain.param_errors(inputs.seq_len)
        why = missing(MODULE, DISTRIBUTION)
        return reasons + ([why] if why else [])

    def shape_reasons(self, inputs: Inputs) -> list[str]:
        return causal_said(super().shape_reasons(inputs))

    def module(self, inputs: Inputs) -> torch.nn.Module:
        """A ``NystromAttention`` for the inputs' heads, its ``to_qkv`` a ``Given`` and its
        ``to_out`` the identity, on the inputs' device."""
        from nystrom_attention import NystromAttention

        p = self.params
        attn = NystromAttention(dim=1, dim_head=inputs.head_dim, heads=inputs.heads,
                                num_landmarks=p.landmarks, pinv_iterations=p.pinv_iterations,
                                residual=False)  # fmt: skip
        attn.to_qkv, attn.to_out = Given(), torch.nn.Identity()
        return attn.to(inputs.device)

    def prepare(self, inputs: Inputs) -> AttentionFn:
        b, h, n, d = inputs.shape
        attn = self.module(inputs)
        given = attn.to_qkv
        x = torch.empty(b, n, 0, dtype=inputs.dtype, device=inputs.device)  # only its shape is read
        # its padding is masked only through a mask; without padding it takes none
        padded = n % self.params.landmarks != 0
        mask = torch.ones(b, n, dtype=torch.bool, device=inputs.device) if padded else None

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k, v = (expand_heads(t, h) for t in (k, v))  # [B, H, N, D]: it has one head count
            qkv = torch.cat([t.transpose(1, 2) for t in (q, k, v)], dim=2)  # [B, N, 3H, D]
            given.qkv = qkv.view(b, n, 3 * h * d)  # [B, N, 3 H D]
            out = attn(x, mask=mask)  # [B, N, H D]
            given.qkv = None
            return out.view(b, n, h, d).transpose(1, 2)  # [B, H, N, D]

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
        """``nystrom_reference`` in ``compute_dtype`` (default float64 on CPU, float32
        elsewhere)."""
        compute_dtype = reference_dtype(q.device, compute_dtype)
        q, k, v = (t.to(compute_dtype) for t in (q, k, v))
        k, v = (expand_heads(t, inputs.heads) for t in (k, v))  # [B, H, N, D]
        p = self.params
        return nystrom_reference(q, k, v, rows.to(q.device), p.landmarks, p.pinv_iterations)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """At its padded length ``m l``: the packed q, k, v (twice when padded: the padded copy,
        the masked one), the scaled q, F and B with their scores, ``F Z``, its output and its
        ``[B, N, H D]`` copy; a backward pass adds one more of each size. Measured at 2K tokens
        (no padding)."""
        p, n = self.params, inputs.seq_len
        padded = p.landmarks * -(-n // p.landmarks)
        packed = 3 * rows_bytes(inputs, padded) * (2 if padded > n else 1)
        big = rows_bytes(inputs, padded, p.landmarks)
        out = rows_bytes(inputs, padded)
        forward = packed + 4 * big + 3 * out
        if not inputs.requires_grad:
            return forward
        return forward + big + out
