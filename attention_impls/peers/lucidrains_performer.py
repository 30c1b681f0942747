"""lucidrains' performer-pytorch (``performer_pytorch.FastAttention``, checked with 1.1.4) driven
on our q, k, v ``[B, H, N, D]``: the Performer's FAVOR+ (Choromanski et al., 2021, "Rethinking
Attention with Performers", ICLR, arXiv:2009.14794, sections 2-3) as people run it; the family
is ``attention_impls.performer``.

Parameters: ``--random-features m`` -> ``nb_features``, ``--fixed-norms`` -> ``ortho_scaling=1``
(else 0: chi-distributed row lengths), ``causal`` -> ``causal``; ``generalized_attention`` and
``no_projection`` stay off (the softmax kernel). ``FastAttention`` takes q, k, v as they are, so
nothing of ours is timed beyond it, except that grouped-query k and v are repeated to the query
heads first (it has one head count), a copy the row's time includes.

Its projection matrix (the buffer ``projection_matrix``) is drawn by ``FastAttention`` itself from
torch's global generator; ``prepare`` seeds that with the Performer's feature seed inside
``torch.random.fork_rng``, so the matrix is reproducible per seed, and ``reference`` rebuilds the
module to read the same buffer. Its rows equal our Performer's up to their signs (the same draws;
ours are sign-corrected).

Deviations from ``attention_impls.performer``, each in ``reference`` (``performer_reference``):
- orthogonal blocks without the QR sign correction: not Haar-distributed, so the estimator is
  biased (``attention_impls.performer``'s docstring); this changes every result;
- ``eps = 1e-4`` added to every feature after the exponential (``ratio * (exp(..) + eps)``),
  relative to the stabilised features: it adds ``1e-4 / sqrt(m)`` to every feature, a floor
  that weighs most where the features are small;
- stabilisers: the query's maximum over its features and the keys' over all keys and features
  of the head are those of ``w^T x`` alone (ours include ``-|x|^2 / 2``); with the epsilon they
  no longer cancel, and the key maximum, taken over all keys, makes causal outputs depend on
  later keys: a later key with a larger exponent shrinks every earlier key's features toward
  the epsilon floor (keys 40 to 63 of 64 scaled by 3 change outputs 0 to 39 by up to 1.6 in
  float64, D = 16, m = 64; ``tests/test_peers_lucidrains.py``);
- causal: without fast_transformers' CUDA extension (not installed here; on CPU there is none)
  it prints a notice (silenced here) and runs ``causal_linear_attention_noncuda``: ``chunk(128)``
  cuts the sequence into 128 chunks (not chunks of 128), each holding ``[N / 128, m, D]`` prefix
  sums per head; its denominator adds ``eps = 1e-6`` to every key prefix sum. Decoding is then
  impossible (it zips the chunks of q with those of k), so causal decoding is refused;
- non-causal denominators have no epsilon.
FLOPs are the family's count (``Performer.forward_flops``): the repeated key heads are overhead.
Packed documents are refused: ``FastAttention`` takes no mask.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import ClassVar

import torch

from attention_impls.footprint import rows_bytes
from attention_impls.peers.optional import missing
from attention_impls.performer import Performer, PerformerParams, feature_seed
from harness.measure.backend import AttentionFn, Kernel
from harness.measure.inputs import Inputs, expand_heads
from harness.measure.params import narrowed
from harness.measure.reference import reference_dtype, reference_mask
from harness.measure.registry import register

DISTRIBUTION, MODULE = "performer-pytorch", "performer_pytorch"
FEATURE_EPS = 1e-4  # softmax_kernel's default eps, added to every feature
CAUSAL_EPS = 1e-6  # causal_linear_attention(_noncuda)'s eps, added to the key prefix sums


def performer_reference(
    w: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """performer-pytorch's formula, dense: its features of ``q [B, H, R, D]`` and ``k, v [B, H,
    N, D]`` with ``w [m, D]``, ``A = phi(Q) phi(K)^T`` under the causal ``mask`` (None: every
    pair), ``A V`` over ``A 1`` (plus ``CAUSAL_EPS`` times the query's feature sum when causal)."""
    d, m = q.shape[-1], w.shape[0]

    def features(x, over):
        x = x * d**-0.25
        u = x @ w.t()  # [.., n, m]
        top = u.detach().amax(dim=over, keepdim=True)
        half = x.square().sum(dim=-1, keepdim=True) / 2
        return m**-0.5 * (torch.exp(u - half - top) + FEATURE_EPS)

    qf, kf = features(q, -1), features(k, (-2, -1))  # [B, H, R, m], [B, H, N, m]
    a = qf @ kf.transpose(-1, -2)  # [B, H, R, N]
    if mask is None:
        return (a @ v) / a.sum(dim=-1, keepdim=True)
    a = a * mask
    return (a @ v) / (a.sum(dim=-1, keepdim=True) + CAUSAL_EPS * qf.sum(dim=-1, keepdim=True))


@register
class LucidrainsPerformer(Kernel):
    name = "lucidrains-performer"
    description = "performer-pytorch FastAttention (lucidrains), FAVOR+ with its eps"
    implementation = DISTRIBUTION
    pattern = Performer
    Params = narrowed(
        PerformerParams, "random_features", "fixed_norms", "causal",
        qualname="LucidrainsPerformer.Params",
    )  # fmt: skip
    preload = (MODULE,)
    supports_gqa = supports_decoding = True  # GQA by repeating k and v
    why_not: ClassVar[dict[str, str]] = {"documents": "FastAttention takes no mask"}

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs) + self.plain.param_errors(inputs.seq_len)
        if inputs.decoding and self.params.causal:
            reasons.append(
                f"no causal decoding (q_len {inputs.query_len} of {inputs.seq_len}): "
                "performer-pytorch's causal path pairs the chunks of q with those of k"
            )
        why = missing(MODULE, DISTRIBUTION)
        return reasons + ([why] if why else [])

    def module(self, inputs: Inputs) -> torch.nn.Module:
        """A ``FastAttention`` whose projection is drawn from the feature seed (global
        generator forked, so nothing else's draws change), on the inputs' device."""
        from performer_pytorch import FastAttention

        p = self.params
        # its causal constructor prints a notice when fast_transformers' CUDA code is missing
        with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
            torch.manual_seed(feature_seed(inputs))
            attn = FastAttention(
                dim_heads=inputs.head_dim,
                nb_features=p.random_features,
                ortho_scaling=1 if p.fixed_norms else 0,
                causal=p.causal,
            )
        return attn.to(inputs.device)

    def prepare(self, inputs: Inputs) -> AttentionFn:
        attn = self.module(inputs)

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k, v = (expand_heads(t, q.shape[1]) for t in (k, v))  # [B, H, N, D]: one head count
            return attn(q, k, v)  # [B, H, M, D]

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
        """``performer_reference`` with the module's own projection, in ``compute_dtype``
        (default float64 on CPU, float32 elsewhere)."""
        compute_dtype = reference_dtype(q.device, compute_dtype)
        w = self.module(inputs).projection_matrix.to(compute_dtype)
        mask = reference_mask(self, inputs, q.detach(), k.detach(), rows) if self.params.causal \
            else None  # fmt: skip
        q, k, v = (t.to(compute_dtype) for t in (q[:, :, rows], k, v))
        k, v = (expand_heads(t, inputs.heads) for t in (k, v))  # [B, H, N, D]
        return performer_reference(w, q, k, v, mask)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Its features of q and of the keys repeated to H heads, three feature-sized
        temporaries alive at once in its feature map of the keys (the exponent, its stabilised
        copy, the exponential), the output; causal forward: one chunk's ``[N / 128, m, D]``
        prefix sums, three alive. A backward pass keeps the features and their exponentials,
        adds their gradients, the output and dq, dk, dv; causal, every chunk's prefix sums:
        ``[B, H, N, m, D]`` in all (the "memory inefficient" path). Measured at 2K tokens."""
        m, n = self.params.random_features, inputs.seq_len
        fq, fk = rows_bytes(inputs, inputs.query_len, m), rows_bytes(inputs, n, m)
        repeated = 2 * rows_bytes(inputs, n) if inputs.grouped else 0
        out = rows_bytes(inputs, inputs.query_len)
        forward = fq + 3 * fk + repeated + out
        if self.params.causal:
            chunk = rows_bytes(inputs, math.ceil(n / 128) * m)  # [B, H, N / 128, m, D]
            forward = max(forward, fq + fk + 3 * chunk + repeated + out)
        if not inputs.requires_grad:
            return forward
        prefix = rows_bytes(inputs, n * m) if self.params.causal else 0  # [B, H, N, m, D]
        return 3 * (fq + fk) + repeated + 4 * out + prefix
