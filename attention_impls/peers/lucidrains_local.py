"""lucidrains' local-attention (``local_attention.LocalAttention``, github.com/lucidrains/
local-attention), driven on our q, k, v: local windowed attention as in the local attention of
Parmar et al. (2018, "Image Transformer", arXiv:1802.05751, section 3.2) and the Longformer's
sliding window (Beltagy et al., 2020, arXiv:2004.05150, section 3.1). Layout ``[B, H, N, D]`` as
in ``harness.measure.backend``, which ``LocalAttention`` takes too (it packs the leading dims).

The library cuts the sequence into buckets of ``window_size`` W; a query in bucket I scores the
keys of buckets ``I - look_backward .. I + look_forward``. Two backends, one per mode:

- ``lucidrains-local``: ``exact_windowsize=True``, ``look_backward = 1``, ``look_forward = 1``
  (0 when causal): the buckets' keys are masked to ``|i - j| <= W`` (and ``j <= i``), exactly the
  Longformer family's sliding window. Family ``longformer``, parameters ``window`` (W, one-sided:
  ``2W + 1`` keys, as ours) and ``causal``; no dilation, no global tokens.
- ``lucidrains-blocks``: the library's default ``exact_windowsize=False``, non-causal: a
  query attends the whole buckets ``I - 1, I, I + 1``. That is the BigBird family's window with
  no global and no random blocks; family ``bigbird``, parameter ``block_size`` (W). Its causal
  mode (buckets ``I - 1, I``, ``j <= i``) is no family's pattern here: refused.

Scale ``1 / sqrt(D)`` (the library's default), no rotary embedding (it applies one only when
given ``dim``), dropout 0, ``shared_qk`` off, masked scores at ``-finfo.max``.

Deviation, handled: ``autopad=True`` pads q, k, v with zeros to a multiple of W, but masks the
padded keys only when given a key mask; without one, in the non-causal modes, a padded zero key
scores 0 and takes part in the softmax of the queries near the end. So where N is not a multiple
of W the closure passes ``input_mask`` (all True for the real positions), which the library pads
with False. Causal windows never reach a padded key.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from attention_impls.bigbird import BigBirdParams
from attention_impls.longformer import LongformerParams
from attention_impls.peers import optional
from attention_impls.peers.common import window_mask, window_pairs
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import narrowed
from harness.measure.registry import register
from harness.store.facts import Promise

MODULE = "local_attention"


class _LocalAttention(AttentionBackend):
    """What both modes share: the library's module, built in ``prepare``, and its key mask."""

    implementation = "local-attention"
    is_sparse = True
    promise = Promise(1)
    preload = (MODULE,)
    why_not: ClassVar[dict[str, str]] = {
        "gqa": "LocalAttention buckets k and v with the queries' heads",
        "decoding": "LocalAttention buckets the queries and the keys alike",
        "documents": "its key mask masks keys, not pairs",
    }
    exact = True

    def size(self) -> int:
        """The bucket size W."""
        raise NotImplementedError

    def causal(self) -> bool:
        return False

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs) + self.param_errors(inputs.seq_len)
        reason = optional.missing(MODULE, "local-attention")
        return reasons + ([reason] if reason else [])

    def param_errors(self, seq_len: int) -> list[str]:
        """The family's rules on the window: at least 1, and shorter than the sequence (a
        bucket as long as the sequence for whole buckets, as BigBird's blocks)."""
        longest = seq_len if self.family == "bigbird" else seq_len - 1
        if self.size() < 1:
            return [f"window size {self.size()} must be at least 1"]
        if self.size() > longest:
            return [f"window size {self.size()} must be at most {longest} at length {seq_len}"]
        return []

    def prepare(self, inputs: Inputs) -> AttentionFn:
        from local_attention import LocalAttention

        causal, n = self.causal(), inputs.seq_len
        attn = LocalAttention(
            window_size=self.size(), causal=causal, look_backward=1,
            look_forward=0 if causal else 1, exact_windowsize=self.exact, autopad=True, dropout=0.0,
        ).eval()  # fmt: skip
        key_mask = None  # autopad's zero keys are masked only through a key mask
        if n % self.size() and not causal:
            key_mask = torch.ones(inputs.batch, n, dtype=torch.bool, device=inputs.device)

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return attn(q, k, v, input_mask=key_mask)  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Peak of ``LocalAttention.forward``, fitted to measured peaks (CPU, float32, W 64 and
        256, D 64: within 10%): per padded query, its ``3W`` bucket scores (``2W`` causal) a
        little over twice (scores, masked copy, softmax), the looked-around keys and values
        (``3D`` each, ``2D`` causal) and three vectors; with a backward pass three score copies
        and ten vectors."""
        b, h, n, d = inputs.shape
        w = self.size()
        rows = b * h * -(-n // w) * w
        slots = (2 if self.causal() else 3) * w
        if inputs.requires_grad:
            per_row = 3 * slots + 10 * d
        else:
            per_row = 2.25 * slots + 2 * (slots // w) * d + 3 * d
        return int(per_row * rows * inputs.element_size)


@register
class LucidrainsLocal(_LocalAttention):
    name = "lucidrains-local"
    family = "longformer"
    description = "lucidrains' LocalAttention, exact windows |i - j| <= W (the Longformer window)"
    Params = narrowed(LongformerParams, "window", "causal", qualname="LucidrainsLocal.Params")

    def size(self) -> int:
        return self.params.window

    def causal(self) -> bool:
        return self.params.causal

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        return window_mask(inputs, q.device, rows, self.size(), self.causal())[None, None]

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        return float(window_pairs(seq_len, self.size(), self.causal(), []))


@register
class LucidrainsLocalBlocks(_LocalAttention):
    name = "lucidrains-blocks"
    family = "bigbird"
    description = "lucidrains' LocalAttention, whole buckets I-1, I, I+1 (the library's default)"
    Params = narrowed(BigBirdParams, "block_size", qualname="LucidrainsLocalBlocks.Params")
    fixed_pattern: ClassVar[dict[str, int]] = {"global_blocks": 0, "random_blocks": 0}
    exact = False

    def shape_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().shape_reasons(inputs)
        if inputs.causal:
            reasons.append(
                "local-attention's causal buckets (I - 1, I, j <= i) are no family's "
                "pattern here; lucidrains-local computes its exact causal window"
            )
        return reasons

    def size(self) -> int:
        return self.params.block_size

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        w, keys = self.size(), torch.arange(inputs.seq_len, device=q.device)
        queries = keys if rows is None else rows.to(q.device)
        return ((queries[:, None] // w - keys[None, :] // w).abs() <= 1)[None, None]

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float:
        w = self.size()
        nb = -(-seq_len // w)
        sizes = torch.full((nb,), w)
        sizes[-1] = seq_len - (nb - 1) * w
        window = sizes.clone()  # the keys of buckets I - 1, I, I + 1
        window[1:] += sizes[:-1]
        window[:-1] += sizes[1:]
        return float((sizes * window).sum())
