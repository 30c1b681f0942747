"""Dense softmax attention restricted to a mask: the reference every backend is checked against."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from harness.measure.inputs import Inputs, expand_heads

if TYPE_CHECKING:
    from harness.measure.backend import AttentionBackend


def reference_dtype(device: torch.device, compute_dtype: torch.dtype | None = None) -> torch.dtype:
    """The dtype a dense reference computes in: ``compute_dtype`` where given, else float64 on
    CPU and float32 elsewhere, so that the reference is more precise than what it checks."""
    if compute_dtype is not None:
        return compute_dtype
    return torch.float64 if device.type == "cpu" else torch.float32


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D), masked) v`` for the query positions ``rows`` (all when None).

    q: ``[B, H, Mq, D]``; k, v: ``[B, Hkv, N, D]``, each key/value head shared by ``H // Hkv``
    consecutive query heads (grouped-query attention); ``rows`` index q's ``Mq`` rows; mask:
    bool, broadcastable to ``[B, H, M, N]``, True = attend. Returns ``[B, H, M, D]`` in
    ``compute_dtype`` (default: float64 on CPU, float32 elsewhere), so the reference is more
    precise than what it checks. Differentiable.
    """
    compute_dtype = reference_dtype(q.device, compute_dtype)
    if rows is not None:
        q = q[:, :, rows]  # [B, H, M, D]
    q, k, v = (t.to(compute_dtype) for t in (q, k, v))
    k, v = (expand_heads(t, q.shape[1]) for t in (k, v))  # [B, H, N, D]
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [B, H, M, N]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # [B, H, M, D]


def same_document(inputs: Inputs, positions: torch.Tensor) -> torch.Tensor | None:
    """``[1, 1, M, N]``: whether query ``positions`` and each key lie in one document; None for
    one document."""
    if inputs.documents == 1:
        return None
    doc = inputs.document_ids(positions.device)  # [N]
    return (doc[positions][:, None] == doc[None, :])[None, None]


def exact_mask(inputs: Inputs, rows: torch.Tensor) -> torch.Tensor | None:
    """``[1, 1, M, N]``: the pairs exact attention of the problem attends for query ``rows`` (of
    the M queries), what ``err_vs_full`` measures against: every key, or with ``causal`` the keys
    up to each query's position, within its document. None where that is every key."""
    positions = rows + inputs.query_offset
    mask = same_document(inputs, positions)
    if inputs.causal:
        keys = torch.arange(inputs.seq_len, device=rows.device)
        causal = (keys[None, :] <= positions[:, None])[None, None]  # [1, 1, M, N]
        mask = causal if mask is None else mask & causal
    return mask


def reference_mask(
    backend: AttentionBackend, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """The pairs the case attends, for query rows ``rows`` (of ``q``'s ``M``): the family's
    pattern at those queries' positions among the keys (``Inputs.query_offset`` on), within
    their documents. Families define their pattern on positions, so decoding and documents
    compose with every pattern here, once."""
    positions = rows.to(q.device) + inputs.query_offset
    mask = backend.mask(inputs, q, k, positions)
    docs = same_document(inputs, positions)
    return mask if docs is None else mask & docs


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
