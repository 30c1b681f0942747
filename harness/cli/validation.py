"""Checks of a sweep's size against what the machine can hold, for ``harness.cli.cli``: a case
whose inputs alone exceed the device's memory is refused before anything runs, rather than
run to an out-of-memory error (or to the swap)."""

from __future__ import annotations

import os

import torch

from harness.store import limits


def device_memory_bytes(device: str) -> int | None:
    """The device's total memory: the GPU's, or the machine's RAM for the CPU; None if unknown."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def inputs_bytes(n: int, batch: int, heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """q, k and v of one case: ``3 * batch * heads * n * head_dim`` elements."""
    return 3 * batch * heads * n * head_dim * torch.empty((), dtype=dtype).element_size()


def size_problem(
    lengths: tuple[int, ...], batch: int, heads: int, head_dim: int, dtype: torch.dtype, device: str
) -> str | None:
    """Why the sweep's largest case cannot fit, or None."""
    if len(lengths) > limits.MAX_LENGTHS:
        return f"{len(lengths)} lengths: at most {limits.MAX_LENGTHS} in one sweep"
    memory = device_memory_bytes(device)
    n = max(lengths)
    need = inputs_bytes(n, batch, heads, head_dim, dtype)
    if memory is not None and need > memory:
        return (
            f"at length {n}, batch {batch}, {heads} heads, head_dim {head_dim} the inputs q, k "
            f"and v alone take {need / 2**30:.3g} GiB, more than the {memory / 2**30:.3g} GiB "
            f"of {device}'s memory"
        )
    return None
