"""Dense softmax attention restricted to a mask: the reference every backend is checked against."""

from __future__ import annotations

import torch


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D), masked) v`` for the query positions ``rows`` (all when None).

    q, k, v: ``[B, H, N, D]``; mask: bool, broadcastable to ``[B, H, M, N]``, True = attend.
    Returns ``[B, H, M, D]`` in ``compute_dtype`` (default: float64 on CPU, float32 elsewhere),
    so the reference is more precise than what it checks. Differentiable.
    """
    if compute_dtype is None:
        compute_dtype = torch.float64 if q.device.type == "cpu" else torch.float32
    if rows is not None:
        q = q[:, :, rows]  # [B, H, M, D]
    q, k, v = (t.to(compute_dtype) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [B, H, M, N]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # [B, H, M, D]


def check_rows(seq_len: int, count: int, seed: int, must: tuple[int, ...] = ()) -> torch.Tensor:
    """Query positions to check at ``seq_len``: the ends, ``must``, and random others."""
    if seq_len <= count:
        return torch.arange(seq_len)
    gen = torch.Generator().manual_seed(seed)
    picked = {0, seq_len - 1, *(m % seq_len for m in must)}
    extra = torch.randperm(seq_len, generator=gen)[:count].tolist()
    for r in extra:
        if len(picked) >= count:
            break
        picked.add(r)
    return torch.tensor(sorted(picked))
