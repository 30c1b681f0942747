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

Implementation, O(N w) time and memory (never an N x N tensor):
- Dilation: positions congruent mod ``d`` form ``d`` interleaved classes; within a class the
  dilated window is an ordinary window of ``w`` class neighbours, so the class is a batch dim.
- Window: each class is cut into blocks of ``bs = w`` positions (``bs = class length - 1`` when
  the class is shorter than the window: it covers the whole class either way). Query block ``I``
  scores key blocks ``I-1, I, I+1`` (``I-1, I`` when causal, as block ``I+1`` is all future) and a
  mask precomputed in ``prepare`` keeps ``|i - j| <= d w``, causality, and drops global keys.
- Global keys are extra score columns for every query; one softmax runs over window and global
  columns together, so each pair counts once.
- Global queries attend every key densely (``[.., G, N]`` scores) and replace their output rows
  out of place (``index_copy``), which keeps autograd intact.
- Grouped-query attention: the ``G`` query heads of a key/value head are stacked as ``G * bs``
  rows of each query block (``attention_impls.grouped``), so k and v are never repeated.
- Packed documents: the precomputed masks also drop the pairs of different documents; a global
  token is global within its document (``reference_mask``: the pattern AND same document).
- Decoding (``q_len < N``): the last ``M`` queries' bands are gathered instead
  (``attention_impls.longformer_band``), O(M w).
Padding: ``N`` is padded with zeros to ``d * nb * bs`` (whole classes of whole blocks); padded keys
are masked with ``-inf`` and padded query rows are dropped from the output. No softmax row is all
``-inf`` (its NaN would leak into real gradients): a real query keeps itself or, if global, its
global column; a class holds at most ``bs <= w`` padded slots, so a padded query is within ``w``
of a real key, kept in the window or in the global columns (never causally blocked there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from attention_impls.flex import TILE, FlexMaskBackend, Mod, scalar, table_len
from attention_impls.footprint import rows_bytes
from attention_impls.grouped import fold_groups, fold_mask, kv_share, other_document, unfold_groups
from attention_impls.longformer_band import band_attention, band_bytes
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


def _layout(params: LongformerParams, n: int) -> tuple[int, int, int]:
    """Classes ``d``, block size ``bs`` and blocks per class ``nb`` for length ``n``."""
    # A dilation >= n leaves one position per class: the same pattern as d = n, less padding.
    d = min(params.dilation, n)
    class_len = -(-n // d)
    # A window reaching past the class ends covers the whole class: smaller blocks, same pattern.
    bs = max(1, min(params.window, class_len - 1))
    return d, bs, -(-class_len // bs)


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
        n, scale, dev = inputs.seq_len, inputs.scale, torch.device(inputs.device)
        gpos_list = global_positions(p.global_tokens, n)
        if inputs.decoding:
            return band_attention(inputs, p.window, p.dilation, gpos_list, p.causal)
        d, bs, nb = _layout(p, n)
        n_pad = d * nb * bs
        before, after = 1, 0 if p.causal else 1  # neighbour key blocks on each side
        ks = (before + 1 + after) * bs  # key slots per query block
        hkv, groups = inputs.kv_heads_count, inputs.heads // inputs.kv_heads_count
        gpos = torch.tensor(gpos_list, dtype=torch.long, device=dev)
        g = gpos.numel()
        is_global = torch.zeros(n_pad, dtype=torch.bool, device=dev)
        is_global[gpos] = True

        # Class index r and sequence position c + d*r of every query slot and key slot.
        r_q = torch.arange(nb * bs, device=dev).view(nb, bs)  # [nb, bs]
        blocks = torch.arange(nb, device=dev)[:, None]
        r_k = (blocks - before) * bs + torch.arange(ks, device=dev)  # [nb, ks]
        cls = torch.arange(d, device=dev)[:, None, None]
        q_pos = cls + d * r_q  # [d, nb, bs]
        k_pos = cls + d * r_k  # [d, nb, ks]
        dist = r_k[:, None, :] - r_q[:, :, None]  # [nb, bs, ks]
        in_window = dist.abs() <= p.window  # [nb, bs, ks]
        if p.causal:
            in_window &= dist <= 0
        # Global keys are left to the global columns so that no pair is counted twice.
        k_ok = (r_k >= 0) & (k_pos < n) & ~is_global[k_pos.clamp(0, n_pad - 1)]  # [d, nb, ks]
        window_blocked = ~(in_window & k_ok[:, :, None, :])  # [d, nb, bs, ks]
        docs = other_document(inputs, q_pos[..., None], k_pos[:, :, None, :], n_pad)
        if docs is not None:
            window_blocked |= docs
        global_blocked = None  # global columns [d, nb, bs, G]
        dense_blocked = None  # global rows [G, N]
        if p.causal and g:
            global_blocked = gpos > q_pos[..., None]  # [d, nb, bs, G]
            dense_blocked = torch.arange(n, device=dev) > gpos[:, None]  # [G, N]
        if g and inputs.documents > 1:
            # a global token is global within its own document only (``reference_mask``)
            cross = other_document(inputs, q_pos[..., None], gpos, n_pad)  # [d, nb, bs, G]
            global_blocked = cross if global_blocked is None else global_blocked | cross
            cross = other_document(inputs, gpos[:, None], torch.arange(n, device=dev), n_pad)
            dense_blocked = cross if dense_blocked is None else dense_blocked | cross  # [G, N]
        # one mask row per query row of each of the G query heads folded into a block
        window_blocked = fold_mask(window_blocked, groups)  # [d, nb, G*bs, ks]
        global_blocked = fold_mask(global_blocked, groups)  # [d, nb, G*bs, G]
        dense_blocked = fold_mask(dense_blocked, groups)  # [G*G, N]

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            b, h, _, dim = q.shape
            q = q * scale  # scaling q is cheaper than scaling the [.., ks + G] scores

            def to_classes(x: torch.Tensor, front: int = 0, back: int = 0) -> torch.Tensor:
                heads = x.shape[1]
                # Prepending d*bs zeros shifts every class by one block and keeps each class.
                pad = (0, 0, front * d * bs, n_pad - n + back * d * bs)
                x = F.pad(x, pad) if any(pad) else x  # [B, h, d*(nb+front+back)*bs, D]
                x = x.view(b, heads, -1, d, dim).transpose(2, 3)  # [B, h, d, (nb+f+b)*bs, D]
                return x.reshape(b, heads, d, nb + front + back, bs, dim)  # [.., nb+f+b, bs, D]

            def neighbours(x: torch.Tensor) -> torch.Tensor:
                x = to_classes(x, before, after)  # [B, Hkv, d, nb+before+after, bs, D]
                shifted = [x[:, :, :, s : s + nb] for s in range(before + 1 + after)]
                return torch.cat(shifted, dim=-2)  # [B, Hkv, d, nb, ks, D]

            # The G query heads of a key/value head are G*bs rows of each query block.
            qc = fold_groups(to_classes(q), hkv).contiguous()  # [B, Hkv, d, nb, G*bs, D]
            vn = neighbours(v)  # [B, Hkv, d, nb, ks, D]
            scores = qc @ neighbours(k).transpose(-1, -2)  # [B, Hkv, d, nb, G*bs, ks]
            # In place is safe: the matmul's backward needs its inputs, not this output.
            scores.masked_fill_(window_blocked, float("-inf"))
            if g:
                qflat = qc.view(b, hkv, -1, dim)  # [B, Hkv, n_pad*G, D]
                g_scores = qflat @ k[:, :, gpos].transpose(-1, -2)  # [B, Hkv, n_pad*G, G]
                g_scores = g_scores.view(*qc.shape[:-1], g)  # [B, Hkv, d, nb, G*bs, G]
                if global_blocked is not None:
                    g_scores.masked_fill_(global_blocked, float("-inf"))
                probs = torch.cat([scores, g_scores], dim=-1).softmax(dim=-1)
                g_probs = probs[..., ks:].reshape(b, hkv, -1, g)  # [B, Hkv, n_pad*G, G]
                g_out = (g_probs @ v[:, :, gpos]).view(qc.shape)  # [B, Hkv, d, nb, G*bs, D]
                out = probs[..., :ks] @ vn + g_out  # [B, Hkv, d, nb, G*bs, D]
            else:
                out = scores.softmax(dim=-1) @ vn  # [B, Hkv, d, nb, G*bs, D]
            out = unfold_groups(out, groups)  # [B, H, d, nb, bs, D]
            out = out.reshape(b, h, d, nb * bs, dim).transpose(2, 3)  # [B, H, nb*bs, d, D]
            out = out.reshape(b, h, n_pad, dim)[:, :, :n]  # [B, H, N, D]
            if g:
                rows = q[:, :, gpos].reshape(b, hkv, -1, dim)  # [B, Hkv, G*G, D]
                dense = rows @ k.transpose(-1, -2)  # [B, Hkv, G*G, N]
                if dense_blocked is not None:
                    dense.masked_fill_(dense_blocked, float("-inf"))
                dense = (dense.softmax(dim=-1) @ v).view(b, h, g, dim)  # [B, H, G, D]
                out = out.index_copy(2, gpos, dense)  # [B, H, N, D]
            return out

        return fn

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
        """Peak of the blocked computation, counted from the tensors ``fn`` allocates.

        ``S``: the window scores ``[B, H, d, nb, bs, ks]``; ``S_all``: window and global columns
        (``S`` plus ``[B, H, n_pad, G]``); ``nbr``: one neighbour copy ``[B, Hkv, d, nb, ks, D]``;
        ``q``: the scaled q, and its class-major copy where dilation, padding or grouped query
        heads make one. Decoding is ``longformer_band.band_bytes``.

        - forward: q, v's neighbours (k's are freed after its matmul), ``S`` and its softmax and
          the output; with globals, ``S``, the global scores, their concatenation and its softmax.
        - backward, in the softmax's gradient: the saved softmax, its gradient and the scores'
          gradient (three ``S_all``; without globals the first two are the window's ``S``),
          beside the saved q and k neighbours, v's neighbour gradient and the output; with
          globals also the dense rows' gradients (index_copy's, dq, dk, dv) computed first.
        """
        p, n = self.params, inputs.seq_len
        g = len(global_positions(p.global_tokens, n))
        if inputs.decoding:
            return band_bytes(inputs, p.window, p.dilation, g, p.causal)
        d, bs, nb = _layout(p, n)
        n_pad = d * nb * bs
        ks = (2 if p.causal else 3) * bs
        share = kv_share(inputs)  # k and v have Hkv heads, q and the scores H
        vec = rows_bytes(inputs, n)
        # the class-major q (a copy where dilation, padding or query-head groups make one)
        q_copy = rows_bytes(inputs, n_pad) if d > 1 or n_pad > n or inputs.grouped else 0
        nbr = int(rows_bytes(inputs, d * nb * ks) * share)
        scores = rows_bytes(inputs, n_pad, ks)
        glob = rows_bytes(inputs, n_pad, g)
        scores_all = scores + glob
        if g:
            forward = vec + q_copy + nbr + scores + glob + 2 * scores_all
        else:
            forward = vec + q_copy + nbr + 2 * scores + vec
        if not inputs.requires_grad:
            return forward
        saved_q = q_copy or vec
        kv = int(vec * share)
        backward = 3 * scores_all + saved_q + 2 * nbr + vec + (2 * vec + 2 * kv if g else 0)
        return max(forward + nbr, backward)


@register
class FlexLongformer(FlexMaskBackend):
    name = "flex-longformer"
    description = "Longformer window, dilation, globals as a compiled FlexAttention mask_mod"
    pattern = Longformer


@register
class XformersLongformer(XformersKernel):
    name = "xformers-longformer"
    description = "xformers memory_efficient_attention with a local-window bias (dilation 1)"
    pattern = Longformer
    # the window alone: its pattern's dilation 1 and no global tokens (the defaults)
    Params = narrowed(LongformerParams, "window", "causal", qualname="XformersLongformer.Params")

    def window(self) -> int | None:
        return self.params.window
