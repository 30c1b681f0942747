"""Published figures that our own measurements are held against; none was measured here.

FlashAttention-2's forward rate on an H100 SXM5 (bf16/fp16, non-causal, sequence 512 to 16K),
read off the benchmark figure of the FlashAttention-3 paper (Shah et al., 2024, "FlashAttention-3:
Fast and Accurate Attention with Asynchrony and Low-precision", arXiv:2407.08608, figure of
forward speed, "FlashAttention-2" bars). It counts ``4 * batch * heads * seq^2 * head_dim`` FLOPs
per forward, as ``harness.measure.flops`` does for full attention. The H200 has the H100's compute
(a larger, faster memory), so the same range is the expectation there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedRange:
    """A published rate range, TFLOP/s, and where it comes from."""

    low: float
    high: float
    source: str

    def place(self, measured: float) -> str:
        """Where ``measured`` lies: "within", or how far below or above the range."""
        if measured < self.low:
            return f"below ({measured / self.low - 1:+.0%} of its low end)"
        if measured > self.high:
            return f"above ({measured / self.high - 1:+.0%} of its high end)"
        return "within"

    def text(self) -> str:
        return f"{self.low:g}-{self.high:g} TFLOP/s ({self.source})"


_FA3_PAPER = "FlashAttention-2 on H100, FlashAttention-3 paper, Shah et al. 2024"

# head_dim -> forward TFLOP/s of FlashAttention-2 over sequence lengths 512 to 16K
FLASH_ATTENTION_2_FORWARD: dict[int, PublishedRange] = {
    64: PublishedRange(280, 325, _FA3_PAPER),
    128: PublishedRange(310, 370, _FA3_PAPER),
}
