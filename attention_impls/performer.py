"""Performer attention, FAVOR+ (Choromanski, Likhosherstov, Dohan, Song, Gane, Sarlos, Hawkins,
Davis, Mohiuddin, Kaiser, Belanger, Colwell and Weller, 2021, "Rethinking Attention with
Performers", ICLR, arXiv:2009.14794, sections 2.2-2.4 and 3).

Layout ``[B, H, N, D]`` as in ``harness.measure.backend``; q and the output ``[B, H, M, D]``,
k and v ``[B, Hkv, N, D]``. The formula, with ``m`` random features ``w_1 .. w_m`` (rows of
``W [m, D]``) and ``x = q / D^(1/4)`` (and ``k / D^(1/4)``), so that ``E[phi(q) phi(k)^T] =
exp(q k^T / sqrt(D))``:

- positive random features (eq. 7 with ``h(x) = exp(-|x|^2 / 2)``, ``f = exp``):
  ``phi(x) = exp(w_i^T x - |x|^2 / 2) / sqrt(m)``, i = 1 .. m;
- orthogonal features (sec. 2.4): ``W`` is blocks of D orthogonal rows, each the transposed Q of
  the QR decomposition of a D x D standard normal matrix (the last block cut to the rows left),
  with the rows' lengths drawn from the chi distribution with D degrees of freedom (the norms of
  fresh D-dimensional normal vectors): the official code's ``scaling=0``; ``--fixed-norms``
  gives every row the length sqrt(D) instead (its ``scaling=1``). Q's columns are multiplied by
  the signs of R's diagonal, which makes Q Haar-distributed (Mezzadri, 2007, arXiv
  math-ph/0609050), so that every row of ``W`` is marginally N(0, I_D) and the estimator
  unbiased, as sec. 2.4 requires. The official code and performer-pytorch leave this out: there
  LAPACK's QR makes, for one, every block's first row point away from the first axis (its first
  coordinate is negative), and the estimate is biased (on inputs of norm 0.3 sqrt(D), D = 16,
  its error against exact attention stops falling at about 0.03 from m = 4096 on, where ours
  falls to 0.003 at m = 65536; ``tests/test_performer.py``). One ``W`` for all batches and
  heads, as the official code draws one per layer; drawn in ``prepare`` from ``inputs.seed +
  3`` (the inputs take the seed, their gradient seed + 1, the documents seed + 2), so redrawn
  per seed, in the official code's order: performer-pytorch seeded alike draws the same rows
  up to their signs;
- attention: ``out = phi(Q) (phi(K)^T V) / phi(Q) (phi(K)^T 1)`` (sec. 2.2, eq. 4-5); causal:
  ``out_i = phi(q_i) S_i / phi(q_i) z_i`` with the prefix sums ``S_i = sum_{j<=i} phi(k_j) v_j^T``,
  ``z_i = sum_{j<=i} phi(k_j)`` (sec. 2.3, unidirectional).

Stabilisation, as the official code's: the exponent ``w_i^T x - |x|^2 / 2`` has its largest
value subtracted, per query over its m features, and per (batch, key/value head) over all keys
and features. Both are constants (per query row; per head), so they cancel in the ratio and
change nothing but rounding; they are detached, as there. Unlike the official code, the
subtracted maximum is that of the whole exponent (the official code's, of ``w_i^T x`` alone:
the same constant up to ``|x|^2 / 2``), so that a query's largest feature is exactly 1, and
``1 / sqrt(m)`` is folded into the exponent. No epsilon is added to the features (the
official code adds 1e-6, performer-pytorch 1e-4: both change the estimate). ``reference``
computes the same features densely, in float64. The key maximum spans every key of the head,
later ones too when causal: it cancels exactly, but a key far below the largest can underflow
to a zero feature in float32 (the official code shares this).

Computation, O(N m D) time, O(N (m + D)) memory, never an N x N tensor:
- non-causal: ``phi(K)^T V [m, D]`` and ``phi(K)^T 1 [m]`` once, then one product per query;
- causal, by prefix sums in blocks of ``c`` (``--causal-chunk``) query positions: each block's
  ``phi(K_b)^T V_b`` summed over earlier blocks (a cumulative sum over ``N / c`` blocks of
  ``[m, D]``) gives the state before the block; within the block a ``c x c`` lower-triangular
  ``phi(Q_b) phi(K_b)^T`` adds the block's own keys. Memory ``N c + (N / c) m D`` per head:
  never ``[N, m, D]`` per position (the naive prefix sum) nor N x N.
- decoding: the queries are the last M positions (bottom-right causal): the keys before them
  are one prefix state, the blocks run over the M query positions only.
- grouped-query attention: ``phi(K)`` per key/value head; the G query heads of a key/value
  head are stacked as G times the rows (``attention_impls.grouped``), k and v never repeated.
- packed documents: each document is a sequence of its own, a slice of the positions (their
  lengths are known in ``prepare``), its queries against its keys alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attention_impls.footprint import kv_bytes, rows_bytes
from attention_impls.full import causal_mask
from attention_impls.grouped import fold_groups, fold_mask, unfold_groups
from attention_impls.linear import feature_attention
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs, expand_heads
from harness.measure.params import param
from harness.measure.reference import reference_dtype, reference_mask
from harness.measure.registry import register
from harness.store.facts import Promise

FEATURE_SEED = 3  # offset from inputs.seed: the inputs take + 0, their gradient + 1, documents + 2


@dataclass(frozen=True)
class PerformerParams:
    random_features: int = param(256, "--random-features", "random features m (FAVOR+)", low=1)
    fixed_norms: bool = param(
        False, "--fixed-norms", "random feature rows all of length sqrt(D), not chi-distributed"
    )
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)
    causal_chunk: int = param(
        128, "--causal-chunk", "query block c of causal prefix sums", low=1, kernel=True
    )


def random_features(head_dim: int, count: int, fixed_norms: bool, seed: int) -> torch.Tensor:
    """``W [count, D]``, float32 on CPU: blocks of D orthogonal rows (the transposed, Haar
    distributed Q of the QR of a standard normal D x D matrix; the last block cut), then row
    lengths, drawn in the official code's order (performer-pytorch's
    ``gaussian_orthogonal_random_matrix``, which lacks the sign correction)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for start in range(0, count, head_dim):
        q, r = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=gen), mode="reduced")
        q = q * torch.diagonal(r).sign()  # [D, D], Haar: column j's sign no longer LAPACK's
        blocks.append(q.t()[: count - start])  # [<= D, D]
    w = torch.cat(blocks)  # [m, D]
    if fixed_norms:
        lengths = torch.full((count,), math.sqrt(head_dim))
    else:  # chi with D degrees of freedom
        lengths = torch.randn(count, head_dim, generator=gen).norm(dim=1)
    return lengths[:, None] * w  # [m, D]


def feature_seed(inputs: Inputs) -> int:
    return inputs.seed + FEATURE_SEED


def positive_features(x: torch.Tensor, w: torch.Tensor, keys: bool) -> torch.Tensor:
    """``phi(x) [.., n, m]`` of ``x [.., n, D]``: ``exp(w_i^T x' - |x'|^2 / 2) / sqrt(m)`` with
    ``x' = x / D^(1/4)``, stabilised by the largest exponent per row (queries) or per head over
    all rows (``keys``). Computed in place: each step's backward needs no overwritten value."""
    x = x * x.shape[-1] ** -0.25  # [.., n, D]
    # |x'|^2 / 2 as one more column of the product: [x', |x'|^2] @ [w, -1/2]^T, so that the
    # backward is the matmul's alone (a broadcast subtraction's costs a negation and a sum)
    x = torch.cat([x, x.square().sum(dim=-1, keepdim=True)], dim=-1)  # [.., n, D + 1]
    w = torch.cat([w, w.new_full((w.shape[0], 1), -0.5)], dim=-1)  # [m, D + 1]
    e = x @ w.t()  # [.., n, m]
    top = e.detach().amax(dim=(-2, -1) if keys else -1, keepdim=True)  # [.., 1 or n, 1]
    return e.sub_(top + 0.5 * math.log(w.shape[0])).exp_()


def linear_attention(qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal: ``qf [B, H, M, m]`` against ``kf [B, Hkv, N, m]``, ``v [B, Hkv, N, D]``."""
    b, h, rows, m = qf.shape
    hkv = kf.shape[1]
    qf = qf.reshape(b, hkv, -1, m)  # [B, Hkv, G*M, m]: a key/value head's query heads stacked
    # numerator and normaliser in one product: v with a column of ones gives the key sum
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)  # [B, Hkv, N, D + 1]
    state = kf.transpose(-1, -2) @ v1  # [B, Hkv, m, D + 1]
    out = qf @ state  # [B, Hkv, G*M, D + 1]
    out = out[..., :-1] / out[..., -1:]  # [B, Hkv, G*M, D]
    return out.reshape(b, h, rows, -1)  # [B, H, M, D]


def causal_linear_attention(
    qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor, later: torch.Tensor
) -> torch.Tensor:
    """Causal by blocked prefix sums: the M queries of ``qf [B, H, M, m]`` are the last M of the
    N positions of ``kf [B, Hkv, N, m]``, ``v [B, Hkv, N, D]``; query r sees keys 0 .. N-M+r.
    ``later [c, c]``: within a block of c query positions, the keys after each query."""
    chunk = later.shape[0]
    b, h, rows, _ = qf.shape
    hkv, n = kf.shape[1], kf.shape[2]
    start, groups = n - rows, h // hkv
    c = min(chunk, rows)
    nb = -(-rows // c)

    def blocks(x: torch.Tensor, heads: int) -> torch.Tensor:
        """``[B, heads, rows, w]`` -> ``[B, heads, nb, c, w]``, zero slots after the last row
        (a view where none are needed)."""
        x = F.pad(x, (0, 0, 0, nb * c - rows)) if nb * c > rows else x
        return x.reshape(b, heads, nb, c, x.shape[-1])

    # the keys before the first query: one state, and its key sum
    head_state = kf[:, :, :start].transpose(-1, -2) @ v[:, :, :start]  # [B, Hkv, m, D]
    head_total = kf[:, :, :start].sum(dim=-2)  # [B, Hkv, m]
    kb, vb = blocks(kf[:, :, start:], hkv), blocks(v[:, :, start:], hkv)  # [B, Hkv, nb, c, .]
    qb = fold_groups(blocks(qf, h), hkv)  # [B, Hkv, nb, G*c, m]
    # state before block i: the head's plus blocks 0 .. i-1 (an exclusive cumulative sum);
    # in place, as cumsum's backward needs no output
    block_state = kb.transpose(-1, -2) @ vb  # [B, Hkv, nb, m, D]
    state = block_state.cumsum(dim=2).sub_(block_state).add_(head_state.unsqueeze(2))
    total = kb.sum(dim=-2)  # [B, Hkv, nb, m]
    total = total.cumsum(dim=2).sub_(total).add_(head_total.unsqueeze(2)).unsqueeze(-1)
    # the block's own keys: slot j of a block is seen by slots i >= j
    later = fold_mask(later[:c, :c], groups)  # [G*c, c]
    scores = (qb @ kb.transpose(-1, -2)).masked_fill_(later, 0)  # [B, Hkv, nb, G*c, c]
    num = unfold_groups(qb @ state + scores @ vb, groups)  # [B, H, nb, c, D]
    den = unfold_groups(qb @ total + scores.sum(dim=-1, keepdim=True), groups)  # [.., c, 1]
    # padded query slots are cut before dividing: their 0 / 0 would reach the gradients
    num, den = (t.reshape(b, h, nb * c, -1)[:, :, :rows] for t in (num, den))  # [B, H, M, .]
    return num / den  # [B, H, M, D]


def performer_flops(inputs: Inputs, features: int) -> float:
    """The matmuls of the formula, 2 FLOPs a multiply-add: the projections ``x W^T`` of the M
    queries (per query head) and N keys (per key/value head), ``phi(K)^T V``, ``phi(Q) S`` and
    ``phi(Q) z``. Causal or not, packed or not, each key enters one state and each query reads
    one: the blocked algorithm's within-block products and per-block states are overhead, as
    are the exponentials and sums."""
    b, h, m_q, d = inputs.shape
    hkv, n, m = inputs.kv_heads_count, inputs.seq_len, features
    queries = b * h * m_q * (2 * m * d + 2 * m * d + 2 * m)
    keys = b * hkv * n * (2 * m * d + 2 * m * d)
    return float(queries + keys)


@register
class Performer(AttentionBackend):
    name = "performer"
    family = "performer"
    description = "FAVOR+ positive orthogonal random features, linear attention"
    Params = PerformerParams
    promise = Promise(1)
    supports_gqa = supports_decoding = supports_documents = True

    def param_errors(self, seq_len: int) -> list[str]:
        p, errors = self.params, []
        if p.random_features < 1:
            errors.append(f"random_features must be >= 1, got {p.random_features}")
        if p.causal_chunk < 1:
            errors.append(f"causal_chunk must be >= 1, got {p.causal_chunk}")
        return errors

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        return super().not_supported_reasons(inputs) + self.param_errors(inputs.seq_len)

    def features(self, inputs: Inputs, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``W [m, D]`` of the case, on its device, in ``dtype`` (the inputs')."""
        p = self.params
        w = random_features(inputs.head_dim, p.random_features, p.fixed_norms, feature_seed(inputs))
        return w.to(device=inputs.device, dtype=dtype or inputs.dtype)

    def prepare(self, inputs: Inputs) -> AttentionFn:
        w, causal = self.features(inputs), self.params.causal
        c = min(self.params.causal_chunk, inputs.query_len)
        later = torch.ones(c, c, dtype=torch.bool, device=inputs.device).triu(1)  # [c, c]
        start = inputs.query_offset
        # each document's key slice and the query rows in it, (a, b, first row, last row + 1)
        bounds, a = [], 0
        for length in inputs.document_lengths():
            lo, hi = max(a, start), a + length
            if hi > lo:
                bounds.append((a, hi, lo - start, hi - start))
            a = hi

        single = inputs.documents == 1

        def attend(qf, kf, v):
            if causal:
                return causal_linear_attention(qf, kf, v, later)
            return linear_attention(qf, kf, v)

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            qf = positive_features(q, w, keys=False)  # [B, H, M, m]
            kf = positive_features(k, w, keys=True)  # [B, Hkv, N, m]
            if single:
                return attend(qf, kf, v)  # [B, H, M, D]
            parts = [attend(qf[:, :, r0:r1], kf[:, :, a:b], v[:, :, a:b])
                     for a, b, r0, r1 in bounds]  # fmt: skip
            return torch.cat(parts, dim=2)  # [B, H, M, D]

        return fn

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The pairs whose features enter a query's sums: all, or ``j <= i`` when causal."""
        if self.params.causal:
            return causal_mask(inputs, rows, q.device)
        return super().mask(inputs, q, k, rows)

    def reference(
        self,
        inputs: Inputs,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        compute_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """``A = phi(Q) phi(K)^T`` densely (``[B, H, rows, N]``), restricted to the causal and
        document mask, each row divided by its sum, times V; the same ``W``, in ``compute_dtype``
        (default float64 on CPU, float32 elsewhere)."""
        compute_dtype = reference_dtype(q.device, compute_dtype)
        mask = reference_mask(self, inputs, q.detach(), k.detach(), rows)  # [1, 1, rows, N]
        w = self.features(inputs, compute_dtype)
        q, k, v = (t.to(compute_dtype) for t in (q[:, :, rows], k, v))
        kf = expand_heads(positive_features(k, w, keys=True), inputs.heads)  # [B, H, N, m]
        qf = positive_features(q, w, keys=False)  # [B, H, rows, m]
        return feature_attention(qf, kf, expand_heads(v, inputs.heads), mask)

    def forward_flops(self, inputs: Inputs) -> float:
        return performer_flops(inputs, self.params.random_features)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The features ``phi(Q) [B, H, M, m]`` and ``phi(K) [B, Hkv, N, m]`` (beside the
        scaled q and k), the output; causal adds the blocks' scores ``[B, H, M, c]``, their
        states ``[B, Hkv, M / c, m, D]`` (the blocks' and their cumulative sum), the two
        products that make the numerator and, where grouped query heads are stacked or the last
        block is padded, a copy of ``phi(Q)``. A backward pass keeps them and adds the
        features' and the output's worth in gradients, with dq, dk, dv. Measured at 2K tokens
        (fwd and fwdbwd, causal or not): within 11% of the peak."""
        p = self.params
        m_q, m = inputs.query_len, p.random_features
        share = inputs.kv_heads_count / inputs.heads
        feats = rows_bytes(inputs, m_q, m) + int(rows_bytes(inputs, inputs.seq_len, m) * share)
        scaled = rows_bytes(inputs, m_q) + kv_bytes(inputs)
        out = rows_bytes(inputs, m_q)
        base = feats + scaled + out
        blocks, products = 0, 0
        if p.causal:
            c = min(p.causal_chunk, m_q)
            nb = -(-m_q // c)
            states = int(rows_bytes(inputs, nb * m) * share)  # [B, Hkv, nb, m, D]
            copy = rows_bytes(inputs, nb * c, m) if inputs.grouped or nb * c > m_q else 0
            blocks, products = rows_bytes(inputs, nb * c, c) + 2 * states + copy, 2 * out
        if not inputs.requires_grad:
            return base + blocks + products
        return 2 * base + blocks + out + 2 * kv_bytes(inputs)
