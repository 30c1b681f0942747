"""Pairs counted from the reference mask, where no family formula applies: decoding queries (the
last ``q_len`` positions) and packed documents cut a pattern in ways each family's closed-form
count does not cover. Counted once per case shape in a process, a block of query rows at a time
so that no ``[M, N]`` matrix is held (16K x 16K booleans would be 256 MiB)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from harness.measure.inputs import Inputs
from harness.measure.reference import reference_mask

if TYPE_CHECKING:
    from harness.measure.backend import AttentionBackend

ROWS_PER_BLOCK = 256


def counted_pairs(backend: AttentionBackend, inputs: Inputs) -> float:
    """Pairs per (batch, head) the reference mask of ``backend`` on ``inputs`` attends (heads
    attending different pairs are averaged)."""
    shape = dataclasses.replace(inputs, requires_grad=False, device="cpu", batch=1)
    key = (type(backend), backend.params_json(), shape)
    if key not in _COUNTED:
        _COUNTED[key] = _count(backend, shape)
    return _COUNTED[key]


_COUNTED: dict[tuple, float] = {}  # by the backend's class and parameters, and the shape


def _count(backend: AttentionBackend, inputs: Inputs) -> float:
    q = torch.zeros(1, inputs.heads, 1, inputs.head_dim)  # masks read only place and dtype
    total = 0
    with torch.no_grad():
        for start in range(0, inputs.query_len, ROWS_PER_BLOCK):
            rows = torch.arange(start, min(start + ROWS_PER_BLOCK, inputs.query_len))
            mask = reference_mask(backend, inputs, q, q, rows)  # [1, 1 or H, rows, N]
            total += int(mask.expand(1, inputs.heads, len(rows), inputs.seq_len).sum())
    return total / inputs.heads
