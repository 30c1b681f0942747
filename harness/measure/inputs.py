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

The values of ``q, k, v`` come from one of the input distributions of
``harness.store.distributions`` (``distribution``): i.i.d. standard normal, or ``structured``
(``structured_qkv``), with the locality and heavy hitters of real attention inputs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from harness.store import distributions as dist

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def expand_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, Hkv, N, D]`` -> ``[B, H, N, D]``: key/value head g repeated for its query heads
    ``g*G .. g*G + G - 1`` (grouped-query attention, ``Inputs.kv_heads``); ``x`` itself when
    every query head has its own."""
    groups = heads // x.shape[1]
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


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
    distribution: str = dist.GAUSSIAN  # what q, k, v are drawn from (``dist.NAMES``)

    def __post_init__(self) -> None:
        if self.distribution not in dist.NAMES:
            raise ValueError(f"unknown input distribution {self.distribution!r}: {dist.NAMES}")
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
        """Fresh ``q [B, H, M, D]``, ``k, v [B, Hkv, N, D]`` of the inputs' ``distribution``
        (standard normal, or ``structured_qkv``), reproducible from ``seed``."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        if self.distribution == dist.STRUCTURED:
            drawn = structured_qkv(self, gen)
        else:
            drawn = tuple(
                torch.randn(shape, generator=gen, device=self.device, dtype=torch.float32)
                for shape in (self.shape, self.kv_shape, self.kv_shape)
            )
        q, k, v = (x.to(self.dtype).requires_grad_(self.requires_grad) for x in drawn)
        return q, k, v

    def make_grad_out(self) -> torch.Tensor:
        """A random upstream gradient for the output, so backward is never timed on zeros."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        g = torch.randn(self.shape, generator=gen, device=self.device, dtype=torch.float32)
        return g.to(self.dtype)


def ar1(noise: torch.Tensor, rho: float) -> torch.Tensor:
    """A stationary AR(1) process along dim -2 from i.i.d. standard normal ``noise [..., N, D]``:
    ``x[0] = e[0]``, ``x[t] = rho x[t-1] + sqrt(1 - rho^2) e[t]``, so every ``x[t]`` has unit
    variance and ``corr(x[t], x[t + d]) = rho^d``. Computed as the sum ``x[t] = sum_i rho^i
    e'[t - i]`` (``e'[0] = e[0]``, ``e'[t] = sqrt(1 - rho^2) e[t]``) by doubling: log2 N steps
    of whole-tensor work, no loop over positions; after the step of shift ``s`` each ``x[t]``
    holds the terms ``i < 2s``. Terms weighted below ``1e-12`` are left out."""
    x = noise * math.sqrt(1 - rho**2)
    x[..., :1, :] = noise[..., :1, :]  # the stationary start
    n, shift, decay = x.shape[-2], 1, rho
    while shift < n and decay > 1e-12:
        # [..., N, D]: rows from ``shift`` on gain the (decayed) sum ending ``shift`` earlier
        x = torch.cat([x[..., :shift, :], x[..., shift:, :] + decay * x[..., :-shift, :]], -2)
        shift, decay = 2 * shift, decay * decay
    return x


def heavy_hitters(seq_len: int, gen: torch.Generator) -> torch.Tensor:
    """The heavy-hitter key positions: 0 (the attention sink) and ``HEAVY_HITTERS - 1`` drawn
    uniformly without replacement from ``1 .. seq_len - 1`` (fewer where there are fewer)."""
    others = torch.randperm(seq_len - 1, generator=gen, device=gen.device)[: dist.HEAVY_HITTERS - 1]
    return torch.cat([torch.zeros(1, dtype=torch.long, device=gen.device), others + 1])


def structured_qkv(
    inputs: Inputs, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q, k, v`` (float32) of the ``structured`` distribution (``harness.store.distributions``,
    whose constants these are), drawn from ``gen`` in this order:

    1. per batch element and key/value head, ``s [B, Hkv, N, D]``: an AR(1) process along the N
       positions (``ar1``, ``rho = exp(-1 / CORRELATION_LENGTH)``), then ``w``, another, for
       the values;
    2. i.i.d. standard normal noise for k and v ``[B, Hkv, N, D]``;
    3. ``u [B, Hkv, D]``, a random unit direction per key/value head;
    4. the heavy-hitter positions (``heavy_hitters``), the same in every head;
    5. i.i.d. standard normal noise for the queries of all N positions ``[B, H, N, D]``.

    Decoding queries are the last ``M`` rows of what the same inputs with ``q_len = N`` draw:
    the sequence is generated whole and cut.

    With ``a = SMOOTH_SHARE``: ``k = sqrt(a) s + sqrt(1 - a) noise``, plus ``HITTER_NORM sqrt(D)
    u`` at the heavy hitters; ``v = sqrt(a) w + sqrt(1 - a) noise``; query head ``h`` of group
    ``g = h // (H / Hkv)`` at position ``t``: ``sqrt(a) s[g, t] + sqrt(1 - a) noise + QUERY_PULL
    u[g]``. Every element has about unit variance (the heavy hitters' rows excepted), so the
    ``1/sqrt(D)`` scaling keeps its meaning; a query's score for a key ``d`` positions away gains
    about ``a sqrt(D) rho^d``, for a heavy hitter ``QUERY_PULL * HITTER_NORM``. Document
    boundaries (``documents``) do not enter: the sequence runs on across them."""
    b, h, m, d = inputs.shape
    hkv, n = inputs.kv_heads_count, inputs.seq_len
    dev, rho, a = inputs.device, dist.rho(), dist.SMOOTH_SHARE

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, device=dev, dtype=torch.float32)

    s, w = ar1(normal(b, hkv, n, d), rho), ar1(normal(b, hkv, n, d), rho)  # [B, Hkv, N, D]
    noise_k, noise_v = normal(b, hkv, n, d), normal(b, hkv, n, d)
    u = normal(b, hkv, d)
    u = u / u.norm(dim=-1, keepdim=True)  # [B, Hkv, D], unit
    hitters = heavy_hitters(n, gen)
    noise_q = normal(b, h, n, d)[:, :, n - m :, :]  # [B, H, M, D]: the last M positions
    k = math.sqrt(a) * s + math.sqrt(1 - a) * noise_k
    k[:, :, hitters, :] += dist.HITTER_NORM * math.sqrt(d) * u[:, :, None, :]
    v = math.sqrt(a) * w + math.sqrt(1 - a) * noise_v
    group = h // hkv
    # [B, Hkv, M, D] -> [B, H, M, D]: query head g * group + j reads key/value head g
    shared = s[:, :, n - m :, :].repeat_interleave(group, dim=1)
    pull = u.repeat_interleave(group, dim=1)[:, :, None, :]  # [B, H, 1, D]
    q = math.sqrt(a) * shared + math.sqrt(1 - a) * noise_q + dist.QUERY_PULL * pull
    return q, k, v
