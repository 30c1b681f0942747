"""The inputs of one attention call, described without allocating them.

Layout used throughout the project: ``[batch, heads, seq_len, head_dim]``, written
``[B, H, N, D]`` in shape comments. Three shapes of today's models are described here too, as
axes of the problem every backend either computes or refuses with a reason
(``AttentionBackend.not_supported_reasons``):

- grouped-query attention: ``kv_heads`` key/value heads shared by ``heads // kv_heads`` query
  heads each (1: multi-query); ``q`` is ``[B, H, M, D]``, ``k`` and ``v`` ``[B, Hkv, N, D]``;
- decoding with a KV cache: ``q_len`` queries ``M`` against ``N = seq_len`` keys, the queries
  being the *last* ``M`` positions (query row ``r`` sits at position ``N - M + r``, so causal
  attention lets it see keys ``0 .. N - M + r``: the bottom-right alignment of FlashAttention 2);
- packed documents: ``documents`` documents of random lengths laid end to end in the ``N``
  positions, attention within each document only (block-diagonal, as xformers'
  ``BlockDiagonalMask`` and FlexAttention's document masking).
"""

from __future__ import annotations

import itertools
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


def document_lengths(seq_len: int, documents: int, seed: int) -> list[int]:
    """``documents`` random lengths summing to ``seq_len``, each at least 1: the cut points are
    drawn uniformly without replacement from ``1 .. seq_len - 1``, reproducibly from ``seed``."""
    if not 1 <= documents <= seq_len:
        raise ValueError(f"{documents} documents do not fit in {seq_len} positions")
    gen = torch.Generator().manual_seed(seed + 2)
    cuts = (torch.randperm(seq_len - 1, generator=gen)[: documents - 1] + 1).sort().values
    bounds = [0, *cuts.tolist(), seq_len]
    return [b - a for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class Inputs:
    """Shape, type, place and seed of ``q, k, v``; ``requires_grad``: autograd records the call
    (a backward pass follows, or the training-mode forward is what is timed)."""

    batch: int
    heads: int
    seq_len: int  # N: the keys, and the queries too unless q_len says otherwise
    head_dim: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    seed: int = 0
    requires_grad: bool = False
    kv_heads: int | None = None  # None: as many as ``heads``
    q_len: int | None = None  # None: ``seq_len``
    documents: int = 1
    causal: bool = False  # the problem's; a family with a causal variant takes it as a parameter

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads_count:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        if not 1 <= self.query_len <= self.seq_len:
            raise ValueError(f"q_len {self.q_len} must be from 1 to the key length {self.seq_len}")

    @property
    def kv_heads_count(self) -> int:
        return self.heads if self.kv_heads is None else self.kv_heads

    @property
    def query_len(self) -> int:
        return self.seq_len if self.q_len is None else self.q_len

    @property
    def query_offset(self) -> int:
        """Position of the first query among the keys: ``N - M`` (0 unless decoding)."""
        return self.seq_len - self.query_len

    @property
    def grouped(self) -> bool:
        return self.kv_heads_count != self.heads

    @property
    def decoding(self) -> bool:
        return self.query_len != self.seq_len

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Of ``q`` (and of the output): ``[B, H, M, D]``."""
        return (self.batch, self.heads, self.query_len, self.head_dim)

    @property
    def kv_shape(self) -> tuple[int, int, int, int]:
        """Of ``k`` and ``v``: ``[B, Hkv, N, D]``."""
        return (self.batch, self.kv_heads_count, self.seq_len, self.head_dim)

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def qkv_bytes(self) -> int:
        b, h, m, d = self.shape
        kv = self.kv_shape
        return (b * h * m * d + 2 * kv[0] * kv[1] * kv[2] * kv[3]) * self.element_size

    def document_lengths(self) -> list[int]:
        return document_lengths(self.seq_len, self.documents, self.seed)

    def document_ids(self, device: str | torch.device | None = None) -> torch.Tensor:
        """The document of every position ``[N]`` (int64; all 0 for one document)."""
        lengths = torch.tensor(self.document_lengths(), device=device or self.device)
        return torch.repeat_interleave(torch.arange(self.documents, device=lengths.device), lengths)

    def make_qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fresh standard-normal ``q [B, H, M, D]``, ``k, v [B, Hkv, N, D]``, reproducible from
        ``seed``."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        q, k, v = (
            torch.randn(shape, generator=gen, device=self.device, dtype=torch.float32)
            .to(self.dtype)
            .requires_grad_(self.requires_grad)
            for shape in (self.shape, self.kv_shape, self.kv_shape)
        )
        return q, k, v

    def make_grad_out(self) -> torch.Tensor:
        """A random upstream gradient for the output, so backward is never timed on zeros."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        g = torch.randn(self.shape, generator=gen, device=self.device, dtype=torch.float32)
        return g.to(self.dtype)
