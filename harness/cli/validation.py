"""Checks of a sweep's grid, for ``harness.cli.cli``: shapes whose axes contradict each other
(kv_heads that do not divide heads, more queries or documents than positions), cases whose
inputs alone exceed the device's memory, refused before anything runs rather than run to an
out-of-memory error (or to the swap), and backend parameters that no backend takes or that a
backend refuses at some length."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import torch

from harness.cli.cli_args import UsageError
from harness.measure.registry import get_backend_class
from harness.store import limits

if TYPE_CHECKING:
    from harness.measure.params import Flag
    from harness.sweep.config import SweepConfig


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


def axes_problem(config: SweepConfig) -> str | None:
    """Why some point of the grid is no problem at all, or None: each of ``--kv-heads`` must
    divide each of ``--heads``, ``--q-len`` and ``--documents`` fit in each length."""
    shortest = min(config.lengths)
    for kv in (k for k in config.kv_heads if k is not None):
        for heads in config.heads:
            if heads % kv:
                return f"--kv-heads {kv} does not divide --heads {heads} (each must divide each)"
    for q_len in (q for q in config.q_len if q is not None):
        if q_len > shortest:
            return f"--q-len {q_len} is more than length {shortest}: the queries are among the keys"
    for documents in config.documents:
        if documents > shortest:
            return f"--documents {documents} do not fit in length {shortest} (one token each)"
    return None


def grid_problem(config: SweepConfig) -> str | None:
    """``axes_problem``, then ``size_problem`` for the largest inputs of each dtype (every
    shape of the grid is at most as large: fewer kv_heads or queries only take less)."""
    problem = axes_problem(config)
    if problem:
        return problem
    batch, heads, head_dim = max(config.batch), max(config.heads), max(config.head_dim)
    for dtype in config.dtype:
        found = size_problem(config.lengths, batch, heads, head_dim, dtype, config.device)
        if found:
            return found
    return None


def check_params(config: SweepConfig, backend_flags: list[Flag]) -> None:
    """The backend parameters' grid: each applies to a selected backend, and every backend
    variant accepts its values at every length (``UsageError`` otherwise)."""
    _params_apply(config, backend_flags)
    _params_valid(config)


def _params_apply(config: SweepConfig, backend_flags: list[Flag]) -> None:
    """A parameter no selected backend takes is a mistake; one that changes what attention
    computes (``for_all``) must apply to all of them, or results of two problems would sit side
    by side as if comparable. ``causal`` is an axis: the families without a causal variant skip
    its cases, but when it is only on, one selected backend at least must have it."""
    takes = {
        name: {f.name for f in dataclasses.fields(get_backend_class(name).Params)}
        for name in config.backends
    }
    by_field = {f.dest: f for f in backend_flags}
    for field, values in config.param_grid:
        if field not in by_field:
            continue
        flag = by_field[field]
        without = [name for name, fields in takes.items() if field not in fields]
        if len(without) == len(takes):
            raise UsageError(f"{flag.flag} applies to none of the selected backends")
        if flag.for_all and any(values) and without:
            raise UsageError(f"{flag.flag}: {', '.join(without)} do not take it")
    if all(config.causal) and not any("causal" in fields for fields in takes.values()):
        raise UsageError("--causal on: none of the selected backends has a causal variant")


def _params_valid(config: SweepConfig) -> None:
    """Every variant of every backend (each value of the grid, causal or not) at every length:
    the backend's own checks of its parameters."""
    for name in config.backends:
        for causal in config.causal:
            try:
                variants = config.variants(name, causal)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{name}: bad parameters: {exc}") from None
            for backend in variants:
                for n in config.lengths:
                    errors = backend.param_errors(n)
                    if errors:
                        raise UsageError(f"{backend.label()} at length {n}: {errors[0]}")
