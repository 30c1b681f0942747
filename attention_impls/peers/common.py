"""What the peer modules share: their reasons, the sliding window of the Longformer family as
pairs and as a count, and the dense formula of a softmax over a multiset of keys, which is what
a peer computes when its kernel scores one key in several slots of a query's row (HF BigBird's
random blocks that repeat a window block, HF Reformer's rounds). Layout ``[B, H, N, D]`` as in
``harness.measure.backend``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.measure.inputs import Inputs
from harness.measure.reference import reference_dtype


def padded(x: torch.Tensor, n_pad: int) -> torch.Tensor:
    """``x`` ``[B, H, N, D]`` with zero rows up to ``n_pad`` (itself when nothing is missing)."""
    missing = n_pad - x.shape[2]
    return F.pad(x, (0, 0, 0, missing)) if missing else x


def window_mask(
    inputs: Inputs, device: torch.device, rows: torch.Tensor | None, window: int, causal: bool
) -> torch.Tensor:
    """``[M, N]``: query ``i`` (of ``rows``, all N when None) attends key ``j`` iff
    ``|i - j| <= window`` (and ``j <= i`` when causal)."""
    keys = torch.arange(inputs.seq_len, device=device)
    queries = keys if rows is None else rows.to(device)
    diff = keys[None, :] - queries[:, None]  # [M, N]
    keep = diff.abs() <= window
    return keep & (diff <= 0) if causal else keep


def window_pairs(n: int, window: int, causal: bool, global_positions: list[int]) -> int:
    """The pairs of ``window_mask`` plus symmetric global positions (each pair once), O(N)."""
    i = np.arange(n, dtype=np.int64)
    right = 0 if causal else np.minimum(window, n - 1 - i)
    width = np.minimum(window, i) + 1 + right  # [N] window keys of each query
    glob = np.array(sorted(set(global_positions)), dtype=np.int64)  # [G]
    if not glob.size:
        return int(width.sum())
    assert not causal, "global positions are counted for the non-causal window only"
    is_global = np.zeros(n, dtype=bool)
    is_global[glob] = True
    # an ordinary query: its window keys less the global ones among them, plus every global key
    lo, hi = i - window, i + window
    inside = np.searchsorted(glob, hi, side="right") - np.searchsorted(glob, lo, side="left")
    ordinary = (width - inside + glob.size)[~is_global].sum()
    return int(ordinary) + glob.size * n  # a global query attends every key


def counted_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    v: torch.Tensor,
    counts: torch.Tensor,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Softmax attention over keys counted with multiplicity: ``softmax(q k^T / sqrt(D) +
    log count) v``, ``counts`` ``[.., M, N]`` (0: not attended); what a kernel computes when a
    key fills several slots of a query's row. q ``[B, H, M, D]``, keys and v ``[B, H, N, D]``;
    the result is ``[B, H, M, D]`` in ``compute_dtype`` (float64 on CPU, float32 elsewhere by
    default, as ``masked_attention``). Differentiable."""
    compute_dtype = reference_dtype(q.device, compute_dtype)
    q, keys, v = (t.to(compute_dtype) for t in (q, keys, v))
    scores = (q @ keys.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [B, H, M, N]
    scores = scores + counts.to(compute_dtype).log()  # log 0 = -inf: not attended
    return scores.softmax(dim=-1) @ v  # [B, H, M, D]


class Columns(torch.nn.Module):
    """An identity projection put where a peer's module projects its hidden states: the columns
    ``[start, stop)`` of the hidden states, a view (no copy, no arithmetic), so that a peer's
    module that cannot be bypassed reads our q, k or v laid side by side in its hidden states."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden[..., self.start : self.stop]
