"""HuggingFace transformers' Longformer attention, driven on our q, k, v: the Longformer pattern
(Beltagy, Peters and Cohan, 2020, "Longformer: The Long-Document Transformer", arXiv:2004.05150,
section 3.1) as ``LongformerSelfAttention`` computes it. Layout ``[B, H, N, D]`` as in
``harness.measure.backend``; HF's kernel takes ``[B, N, H, D]``, a transposed view of ours.

Parameter mapping:
- ``window`` w (ours: one-sided, ``2w + 1`` keys ``|i - j| <= w``) is HF's
  ``one_sided_attn_window_size``; HF's config ``attention_window`` is the two-sided ``2w``.
- ``global_tokens`` (ours: positions, negative from the end) are the positions HF's
  ``global_attention_mask`` marks, the same in every batch row.
- Refused with reasons: ``w = 1`` (HF's band kernel fails at ``attention_window = 2``, a slice of
  its first chunk has the wrong size), and what HF's kernel lacks: dilation (the original TVM
  kernel had it), causal masking, grouped-query attention, decoding, packed documents.

What runs in the closure: the steps of ``LongformerSelfAttention.forward`` after its projections
(q, k, v are ours; the module's projections are never called), with its own methods:
1. ``q / sqrt(D)``; ``_sliding_chunks_query_key_matmul`` scores the band, ``[B, N, H, 2w + 1]``;
2. the band mask is added: HF's ``finfo.min`` on keys that are padding or global (a global key is
   scored in its own column, so that no pair counts twice);
3. with global tokens, ``_concat_with_global_key_attn_probs`` puts the global keys' columns first;
4. softmax in float32 (as HF; hence no float64 here), padded query rows' probabilities zeroed;
5. ``_sliding_chunks_matmul_attn_probs_value`` (with globals ``_compute_attn_output_with_global_
   indices``) multiplies by v on the band;
6. with global tokens, ``_compute_global_attn_output_from_hidden`` computes the global rows
   densely and they overwrite the output rows. That method reads hidden states through the
   module's global projections: here the hidden states are q, k and v side by side ``[N, B,
   3HD]`` and the three projections are column selections (``common.Columns``, identity
   projections: no arithmetic); laying q, k, v side by side is one O(N D) copy per call, timed.

Deviations, handled: HF needs ``N`` a multiple of ``2w`` (an assertion): q, k, v are padded with
zeros to it, as ``LongformerModel._pad_to_window_size`` pads, and the padding is masked as its
attention mask does; padded rows are dropped. The band mask, HF's global indices and padding masks
depend on the shape only and are built in ``prepare`` (HF builds them in every forward).
The global rows use the same q, k, v as the band: HF's model gives them projections of their own
(``query_global``...), which we replace, since our inputs carry one q, k, v.
Memory: HF's chunked band holds ``[B H, N / w, 2w, 2w]`` scores, twice the band's ``2w + 1``
per row, O(N w) as promised.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from attention_impls.longformer import LongformerParams
from attention_impls.peers import optional
from attention_impls.peers.common import Columns, padded, window_pairs
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import narrowed
from harness.measure.registry import register
from harness.store.facts import Promise
from harness.store.limits import MAX_GLOBAL_TOKENS

MODULE = "transformers.models.longformer.modeling_longformer"


def global_positions(global_tokens: tuple[int, ...], seq_len: int) -> list[int]:
    """The global positions at ``seq_len``: negatives from the end, sorted, unique."""
    return sorted({g % seq_len for g in global_tokens})


def padded_length(seq_len: int, window: int) -> int:
    """HF's length: a multiple of ``attention_window = 2w``."""
    return -(-seq_len // (2 * window)) * 2 * window


@register
class HFLongformer(AttentionBackend):
    name = "hf-longformer"
    family = "longformer"
    description = "HF transformers' LongformerSelfAttention banded kernel (window, globals)"
    implementation = "transformers"
    is_sparse = True
    promise = Promise(1)
    preload = (MODULE,)
    Params = narrowed(LongformerParams, "window", "global_tokens", qualname="HFLongformer.Params")
    dtypes = frozenset({torch.float32, torch.float16, torch.bfloat16})
    why_not: ClassVar[dict[str, str]] = {
        "gqa": "HF's band kernel asserts as many key heads as query heads",
        "decoding": "HF's band kernel scores all N queries against all N keys",
        "documents": "HF's attention mask masks padding, not pairs",
    }

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs) + self.param_errors(inputs.seq_len)
        if inputs.dtype == torch.float64:
            reasons.append("HF's Longformer computes its softmax in float32")
        if self.params.window == 1:  # its band's first chunk is cut to a slice of the wrong size
            reasons.append("HF's band kernel fails at window 1 (attention_window 2)")
        reason = optional.missing(MODULE, "transformers")
        return reasons + ([reason] if reason else [])

    def param_errors(self, seq_len: int) -> list[str]:
        """The family's rules (``attention_impls.longformer``); HF's own limits are reasons."""
        p, errors = self.params, []
        if p.window < 1:
            errors.append(f"window {p.window} must be at least 1")
        elif p.window >= seq_len:
            errors.append(f"window {p.window} must be smaller than the length {seq_len}")
        bad = [g for g in p.global_tokens if not -seq_len <= g < seq_len]
        if bad:
            errors.append(f"global tokens {bad[:8]} out of range for length {seq_len}")
        if len(p.global_tokens) > MAX_GLOBAL_TOKENS:
            errors.append(f"{len(p.global_tokens)} global tokens, at most {MAX_GLOBAL_TOKENS}")
        return errors

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        gpos = global_positions(self.params.global_tokens, seq_len)
        return float(window_pairs(seq_len, self.params.window, False, gpos))

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        n, w, dev = inputs.seq_len, self.params.window, q.device
        keys = torch.arange(n, device=dev)
        queries = keys if rows is None else rows.to(dev)
        is_global = torch.zeros(n, dtype=torch.bool, device=dev)
        is_global[global_positions(self.params.global_tokens, n)] = True
        band = (queries[:, None] - keys[None, :]).abs() <= w  # [M, N]
        return (band | is_global[queries][:, None] | is_global[None, :])[None, None]

    def prepare(self, inputs: Inputs) -> AttentionFn:
        from transformers.models.longformer.modeling_longformer import (
            LongformerConfig,
            LongformerSelfAttention,
        )

        b, h, n, d = inputs.shape
        w, dev = self.params.window, torch.device(inputs.device)
        n_pad = padded_length(n, w)
        config = LongformerConfig(
            hidden_size=h * d, num_attention_heads=h, attention_window=[2 * w],
            attention_probs_dropout_prob=0.0,
        )  # fmt: skip
        attn = LongformerSelfAttention(config, layer_id=0).eval()
        hd = h * d
        # the projections are ours: the band's are never called, the global rows' select columns
        attn.query = attn.key = attn.value = torch.nn.Identity()
        attn.query_global, attn.key_global = Columns(0, hd), Columns(hd, 2 * hd)
        attn.value_global, attn.embed_dim = Columns(2 * hd, 3 * hd), 3 * hd

        # HF's masks from its attention mask (0 padding, 1 local, 2 global), for the padded length
        gpos = global_positions(self.params.global_tokens, n)
        is_masked = torch.zeros(b, n_pad, dtype=torch.bool, device=dev)  # [B, Np]
        is_masked[:, n:] = True
        is_global = torch.zeros(b, n_pad, dtype=torch.bool, device=dev)  # [B, Np]
        is_global[:, gpos] = True
        remove = (is_masked | is_global)[:1, :, None, None]  # [1, Np, 1, 1]
        float_mask = remove.to(inputs.dtype).masked_fill(remove, torch.finfo(inputs.dtype).min)
        ones = float_mask.new_ones(float_mask.size())
        band_mask = attn._sliding_chunks_query_key_matmul(ones, float_mask, w)  # [1, Np, 1, 2w+1]
        glob, none = {}, {}  # HF's global indices, as its forward passes them
        if gpos:
            most, where, local, local_none = attn._get_global_attn_indices(is_global)
            glob = dict(
                max_num_global_attn_indices=most, is_index_global_attn_nonzero=where,
                is_local_index_global_attn_nonzero=local,
            )  # fmt: skip
            none = dict(is_local_index_no_global_attn_nonzero=local_none)

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            qp, kp, vp = (padded(t, n_pad) for t in (q, k, v))  # [B, H, Np, D]
            query = (qp / math.sqrt(d)).transpose(1, 2)  # [B, Np, H, D]
            key, value = kp.transpose(1, 2), vp.transpose(1, 2)  # [B, Np, H, D]
            scores = attn._sliding_chunks_query_key_matmul(query, key, w)  # [B, Np, H, 2w+1]
            scores += band_mask
            if gpos:
                g_scores = attn._concat_with_global_key_attn_probs(
                    key_vectors=key, query_vectors=query, **glob, **none
                )  # [B, Np, H, G]
                scores = torch.cat((g_scores, scores), dim=-1)  # [B, Np, H, G + 2w+1]
            probs = F.softmax(scores, dim=-1, dtype=torch.float32)
            probs = probs.masked_fill(is_masked[:, :, None, None], 0.0).type_as(scores)
            if not gpos:
                out = attn._sliding_chunks_matmul_attn_probs_value(probs, value, w)
                return out.transpose(1, 2)[:, :, :n]  # [B, H, N, D]
            out = attn._compute_attn_output_with_global_indices(
                value_vectors=value, attn_probs=probs, **glob
            )  # [B, Np, H, D]
            out = out.transpose(0, 1).reshape(n_pad, b, hd).contiguous()  # [Np, B, HD], as HF
            hidden = [t.permute(2, 0, 1, 3).reshape(n_pad, b, hd) for t in (qp, kp, vp)]
            hidden = torch.cat(hidden, dim=-1)  # [Np, B, 3HD]: q, k, v side by side
            rows, _ = attn._compute_global_attn_output_from_hidden(
                hidden_states=hidden, is_index_masked=is_masked, **glob, **none
            )  # [B, H, G, D]
            local = glob["is_local_index_global_attn_nonzero"]
            rows = rows[local[0], :, local[1]]  # [B * G, H, D]
            out[glob["is_index_global_attn_nonzero"][::-1]] = rows.view(len(local[0]), -1)
            return out.view(n_pad, b, h, d).permute(1, 2, 0, 3)[:, :, :n]  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Peak of ``fn`` (``B H`` rows of ``Np``), fitted to measured peaks (CPU, float32, w 256,
        D 64: within 15%): the forward's is where ``_sliding_chunks_query_key_matmul`` pads the
        chunked scores ``[B H, Np / w - 1, 2w, 2w]`` into a copy, 8w numbers per row, beside a few
        vectors; with a backward pass about 11w and eight vectors per row. Global tokens add
        their columns (a few copies of ``[B, Np, H, G]``) and their dense rows ``[B, H, G, Np]``
        with q, k, v side by side."""
        b, h, n, d = inputs.shape
        w = self.params.window
        n_pad = padded_length(n, w)
        g = len(global_positions(self.params.global_tokens, n))
        rows = b * h * n_pad
        per_row = (11 * w + 8 * d) if inputs.requires_grad else (8 * w + 4 * d)
        glob = (4 * g + 3 * d) * rows + 2 * b * h * g * n_pad if g else 0
        return int((per_row * rows + glob) * inputs.element_size)
