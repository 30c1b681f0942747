"""Longformer attention (Beltagy, Peters and Cohan, 2020, "Longformer: The Long-Document
Transformer", arXiv:2004.05150, section 3.1): a sliding window, optionally dilated, plus a few
symmetric global tokens. Layout ``[B, H, N, D]`` as in ``harness.measure.backend``.

Pattern, with one-sided window ``w``, dilation ``d`` and global positions ``G`` (negative ones
counted from the end, duplicates removed): query ``i`` attends key ``j`` iff
- ``j = i + d * t`` for an integer ``t`` with ``|t| <= w`` (the window: ``2w + 1`` keys), or
- ``i`` is global (it attends every key) or ``j`` is global (every query attends it);
- and, when causal, also ``j <= i`` (globals included).
A pair that is both in the window and global counts once in the softmax. This is ``allowed``,
which ``mask`` and, for FlexAttention, ``mask_mod`` evaluate. The kernels hold a ``Longformer``
for the pattern: ``flex-longformer`` (``attention_impls.flex``) and ``xformers-longformer``, the
window alone (dilation 1, no global tokens) as xformers' bias (``attention_impls.xformers_ops``).

Kernels: the blocked one (``attention_impls.longformer_blocks``: dilation classes, blocks of the
window, the global keys as extra columns of one softmax, the global queries as dense rows; O(N w)
time and memory, never N x N) and, decoding (``q_len < N``), the last ``M`` queries' gathered
bands (``attention_impls.longformer_band``, O(M w)). Grouped-query attention stacks the query
heads of a key/value head as rows of each block; packed documents drop the pairs of different
documents: a global token is global within its document (``reference_mask``: the pattern AND
same document). Lengths the blocks do not divide are padded; padded keys are masked and padded
query rows dropped.

Global projections (``--separate-global-qkv``; the paper's ``Qg, Kg, Vg``, section 3.1, HF's
``query_global``, ``key_global``, ``value_global``): the global rows' output is
``softmax(Qg Kg^T / sqrt(D)) Vg`` over every key, from ``q Wq``, ``k Wk``, ``v Wv``
(``attention_impls.longformer_global``, which says which term reads which projection in HF and
why the matrices are drawn from the seed); every other term keeps q, k, v. Off by default: the
paper initialises ``Qg, Kg, Vg`` to ``Qs, Ks, Vs`` (both settings then give the same output), and
without it the family stays one attention pattern over the kernel's q, k, v, like every other
family here. With it the call also does ``O(N D^2)`` of projections, timed and counted in
``forward_flops``, and the output is no longer softmax under one mask (``reference``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attention_impls.flex import TILE, FlexMaskBackend, Mod, scalar, table_len
from attention_impls.footprint import kv_bytes
from attention_impls.longformer_band import band_attention, band_bytes
from attention_impls.longformer_blocks import blocked_attention, blocked_bytes
from attention_impls.longformer_global import (
    global_projections,
    global_query_rows,
    global_rows_fn,
    projection_flops,
    separate_reference,
)
from attention_impls.xformers_ops import XformersKernel
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import narrowed, param
from harness.measure.registry import register
from harness.store.facts import Promise
from harness.store.limits import MAX_GLOBAL_TOKENS


@dataclass(frozen=True)
class LongformerParams:
    window: int = param(256, "--window", "one-sided window w: 2w+1 keys per query", low=1)
    dilation: int = param(1, "--dilation", "query i sees keys i + d*t, |t| <= w", low=1)
    global_tokens: tuple[int, ...] = param(
        (), "--global-tokens", "global positions, negative from the end (-1: the last)",
        metavar="POS",
    )  # fmt: skip
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)
    separate_global_qkv: bool = param(
        False,
        "--separate-global-qkv",
        "global rows read their own q, k, v (the paper's Qg, Kg, Vg): seeded D x D projections",
    )


def global_positions(global_tokens: tuple[int, ...], seq_len: int) -> list[int]:
    """The global positions at ``seq_len``: negatives counted from the end, sorted, unique."""
    return sorted({g % seq_len for g in global_tokens})


def allowed(
    i: torch.Tensor,
    j: torch.Tensor,
    dilation: int | torch.Tensor,
    reach: int | torch.Tensor,
    is_global: torch.Tensor,
    causal: torch.Tensor,
) -> torch.Tensor:
    """The pattern on (broadcast) query and key positions, ``reach = dilation * window``: the one
    definition that the dense reference (``Longformer.mask``) and the Flex kernel's ``mask_mod``
    both evaluate. ``is_global`` flags positions; ``causal`` is a bool tensor, so that a compiled
    ``mask_mod`` does not specialise on it."""
    diff = j - i
    window = (diff % dilation == 0) & (diff.abs() <= reach)
    return (window | is_global[i] | is_global[j]) & ((diff <= 0) | ~causal)


def longformer_pairs(n: int, w: int, d: int, global_tokens: tuple[int, ...], causal: bool) -> int:
    glob = np.array(sorted({int(t) % n for t in global_tokens}), dtype=np.int64)  # [G]
    i = np.arange(n, dtype=np.int64)  # [N] query positions
    is_global = np.zeros(n, dtype=bool)
    is_global[glob] = True
    # Window keys j = i + d t, |t| <= w, kept in range: min(w, i // d) on the left, as many on
    # the right as fit before N (none when causal), plus i itself.
    right = 0 if causal else np.minimum(w, (n - 1 - i) // d)
    window = np.minimum(w, i // d) + 1 + right  # [N]
    # Global keys every query also attends (causal: only those at or before it).
    global_keys = np.searchsorted(glob, i, side="right") if causal else len(glob)
    ordinary = ~is_global
    pairs = int((window + global_keys)[ordinary].sum())
    # Global queries attend every key (causal: keys 0..i), which covers their window.
    pairs += int((glob + 1).sum()) if causal else len(glob) * n
    # Inclusion-exclusion: a global key inside an ordinary query's window was counted twice.
    # Key g lies in the window of queries g + d s, s in [-w, w] (causal: [0, w]) in range ...
    gl = 0 if causal else np.minimum(w, glob // d)
    holders = gl + 1 + np.minimum(w, (n - 1 - glob) // d)  # [G]
    # ... minus those queries that are themselves global: same class mod d, class index within
    # w (at or after g when causal); classes are laid out N apart so that ranges never overlap.
    key = (glob % d) * n + glob // d  # [G]
    order = np.sort(key)
    lo = key - (0 if causal else np.minimum(w, glob // d))
    hi = key + np.minimum(w, (n - 1 - glob) // d)
    holders -= np.searchsorted(order, hi, side="right") - np.searchsorted(order, lo, side="left")
    return pairs - int(holders.sum())


@register
class Longformer(AttentionBackend):
    name = "longformer"
    family = "longformer"
    description = "sliding (dilated) window plus symmetric global tokens, blocked"
    is_sparse = True
    Params = LongformerParams
    promise = Promise(1)
    supports_gqa = True
    supports_decoding = True  # the last M queries' bands, gathered (``longformer_band``)
    supports_documents = True

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        """Exactly ``mask(...).sum()``, in O(N) by inclusion-exclusion."""
        p = self.params
        return float(longformer_pairs(seq_len, p.window, p.dilation, p.global_tokens, p.causal))

    def param_errors(self, seq_len: int) -> list[str]:
        p = self.params
        errors = []
        if p.window < 1:
            errors.append(f"window {p.window} must be at least 1")
        elif p.window >= seq_len:
            errors.append(f"window {p.window} must be smaller than the length {seq_len}")
        if p.dilation < 1:
            errors.append(f"dilation {p.dilation} must be at least 1")
        elif p.window >= 1 and p.dilation > 1 and p.dilation * p.window >= seq_len:
            # the same rule as the window's: a window that reaches past both ends is no window
            errors.append(
                f"the dilated window, dilation {p.dilation} x window {p.window}, must be "
                f"shorter than the length {seq_len}"
            )
        bad = [g for g in p.global_tokens if not -seq_len <= g < seq_len]
        if bad:
            errors.append(f"global tokens {bad[:8]} out of range for length {seq_len}")
        if len(p.global_tokens) > MAX_GLOBAL_TOKENS:  # each is a dense row: more is full attention
            errors.append(
                f"{len(p.global_tokens)} global tokens, at most {MAX_GLOBAL_TOKENS} (each is a "
                "dense row: more is full attention)"
            )
        return errors

    def prepare(self, inputs: Inputs) -> AttentionFn:
        p = self.params
        gpos_list = global_positions(p.global_tokens, inputs.seq_len)
        proj = global_projections(inputs) if p.separate_global_qkv else None
        if inputs.decoding:
            return band_attention(inputs, p.window, p.dilation, gpos_list, p.causal, proj)
        return blocked_attention(inputs, p, gpos_list, proj)

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        p = self.params
        n, dev = inputs.seq_len, q.device
        keys = torch.arange(n, device=dev)
        queries = keys if rows is None else rows.to(dev)
        is_global = torch.zeros(n, dtype=torch.bool, device=dev)
        is_global[global_positions(p.global_tokens, n)] = True
        causal = torch.tensor(p.causal, device=dev)
        reach = p.dilation * p.window
        pairs = allowed(queries[:, None], keys[None, :], p.dilation, reach, is_global, causal)
        return pairs[None, None]  # [1, 1, M, N]

    def reference(
        self,
        inputs: Inputs,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        compute_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Softmax under the mask; with separate global projections the global rows' output is
        softmax under their mask row with ``qg, kg, vg`` (``longformer_global``)."""
        if not self.params.separate_global_qkv:
            return super().reference(inputs, q, k, v, rows, compute_dtype)
        from harness.measure.reference import reference_mask

        mask = reference_mask(self, inputs, q.detach(), k.detach(), rows)
        gpos = global_positions(self.params.global_tokens, inputs.seq_len)
        return separate_reference(inputs, gpos, mask, q, k, v, rows, compute_dtype)

    def forward_flops(self, inputs: Inputs) -> float | None:
        """``4 B H D`` per attended pair, plus, with separate global projections, theirs."""
        pairs_flops = super().forward_flops(inputs)
        if pairs_flops is None or not self.params.separate_global_qkv:
            return pairs_flops
        gpos = global_positions(self.params.global_tokens, inputs.seq_len)
        return pairs_flops + projection_flops(inputs, len(global_query_rows(inputs, gpos)))

    def mask_mod(self, inputs: Inputs) -> Mod:
        """``allowed`` for FlexAttention, over tables as long as the kernel's tiles reach."""
        p, n, dev = self.params, inputs.seq_len, torch.device(inputs.device)
        # A dilation >= n leaves only j = i, as does reach = n: clamped, no int32 overflow.
        d = min(p.dilation, n)
        dilation, reach = scalar(d, dev), scalar(min(d * p.window, n), dev)
        causal = torch.tensor(p.causal, device=dev)
        is_global = torch.zeros(table_len(n, TILE), dtype=torch.bool, device=dev)
        is_global[global_positions(p.global_tokens, n)] = True
        return lambda b, h, i, j: allowed(i, j, dilation, reach, is_global, causal)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Peak of the blocked kernel (``longformer_blocks.blocked_bytes``) or, decoding, of the
        bands (``longformer_band.band_bytes``); with separate global projections also ``kg`` and
        ``vg``, saved for the backward beside their gradients."""
        p = self.params
        g = len(global_positions(p.global_tokens, inputs.seq_len))
        projected = 2 * kv_bytes(inputs) if p.separate_global_qkv and g else 0
        if inputs.decoding:
            peak = band_bytes(inputs, p.window, p.dilation, g, p.causal)
        else:
            peak = blocked_bytes(inputs, p, g)
        return peak + projected * (2 if inputs.requires_grad else 1)


@register
class FlexLongformer(FlexMaskBackend):
    name = "flex-longformer"
    description = "Longformer window, dilation, globals as a compiled FlexAttention mask_mod"
    pattern = Longformer

    def prepare(self, inputs: Inputs) -> AttentionFn:
        """The pattern's kernel; with separate global projections the global query rows are
        then recomputed from ``qg, kg, vg`` (fused SDPA over ``[B, H, Gq, N]``)."""
        fn, p = super().prepare(inputs), self.params
        gpos = global_positions(p.global_tokens, inputs.seq_len)
        replace = global_rows_fn(inputs, gpos, p.causal) if p.separate_global_qkv else None
        if replace is None:
            return fn

        def separate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return replace(fn(q, k, v), q, k, v)  # [B, H, M, D]

        return separate


@register
class XformersLongformer(XformersKernel):
    name = "xformers-longformer"
    description = "xformers memory_efficient_attention with a local-window bias (dilation 1)"
    pattern = Longformer
    # the window alone: its pattern's dilation 1 and no global tokens (the defaults)
    Params = narrowed(LongformerParams, "window", "causal", qualname="XformersLongformer.Params")

    def window(self) -> int | None:
        return self.params.window
