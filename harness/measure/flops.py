"""Useful floating-point operations of one call, from the pairs a backend's pattern attends.

Layout ``[batch, heads, seq, head_dim] = [B, H, N, D]``. "Useful" FLOPs are those of the two
matmuls over the (query, key) pairs the pattern actually attends: ``q k^T`` costs ``2 D`` FLOPs
per pair (D multiply-adds) and ``P v`` another ``2 D``, so a forward pass is
``4 * B * H * D * pairs``. The softmax and the sparse bookkeeping (gathers, masks, padding,
hashing, sorting) are not counted: they are the overhead that the useful-FLOP rate exposes.
The backward pass is counted as 2.5x the forward (FlashAttention's convention: dQ, dK, dV and
the recomputed scores), so per mode (``MODE_FACTORS``): ``fwd`` (inference) and ``fwd-grad``
(the forward recorded for autograd, as in training) 1x, ``bwd`` (the backward alone) 2.5x and
``fwdbwd`` 3.5x the forward.

Each family counts its pairs (``AttentionBackend.attended_pairs``, next to its pattern): exact
where the pattern is fixed, expected where it depends on the input values (Reformer). The sweep
stores the result in every row's ``flops`` column, so that analysis needs no backend.
"""

from __future__ import annotations

BACKWARD_FACTOR = 2.5
# The modes a case can time (the ``pass`` column), with their FLOPs in forwards
MODE_FACTORS = {"fwd": 1.0, "fwd-grad": 1.0, "bwd": BACKWARD_FACTOR, "fwdbwd": 1 + BACKWARD_FACTOR}


def useful_flops(
    pairs: float | None, batch: int, heads: int, head_dim: int, pass_: str
) -> float | None:
    """``4 B H D pairs`` times the mode's factor (``MODE_FACTORS``); None where pairs are
    unknown. ``heads`` are the query heads: grouped-query attention does the same work."""
    if pass_ not in MODE_FACTORS:
        raise ValueError(f"mode must be one of {', '.join(MODE_FACTORS)}, got {pass_!r}")
    if pairs is None:
        return None
    return 4.0 * batch * heads * head_dim * pairs * MODE_FACTORS[pass_]
