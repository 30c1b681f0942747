"""The inputs of one attention call, described without allocating them.

Layout used throughout the project: ``[batch, heads, seq_len, head_dim]``, written
``[B, H, N, D]`` in shape comments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Inputs:
    """Shape, type, place and seed of ``q, k, v``; ``requires_grad``: a backward pass follows."""

    batch: int
    heads: int
    seq_len: int
    head_dim: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    seed: int = 0
    requires_grad: bool = False

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.heads, self.seq_len, self.head_dim)

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def qkv_bytes(self) -> int:
        return 3 * self.batch * self.heads * self.seq_len * self.head_dim * self.element_size

    def make_qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fresh standard-normal ``q, k, v`` ``[B, H, N, D]``, reproducible from ``seed``."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        q, k, v = (
            torch.randn(self.shape, generator=gen, device=self.device, dtype=torch.float32)
            .to(self.dtype)
            .requires_grad_(self.requires_grad)
            for _ in range(3)
        )
        return q, k, v

    def make_grad_out(self) -> torch.Tensor:
        """A random upstream gradient for the output, so backward is never timed on zeros."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        g = torch.randn(self.shape, generator=gen, device=self.device, dtype=torch.float32)
        return g.to(self.dtype)
