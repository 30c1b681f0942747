"""The sweep configuration, built once by the command line and passed down, and the cases it
expands to.

A sweep is a grid: every length, every point of the problem's axes (batch, heads, head_dim,
dtype, kv_heads, q_len, documents, causal, and the distribution of the inputs: ``Shape``), every
variant of each backend (the
product of the values given for its parameters, ``param_grid``) and every mode."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.measure.backend import AttentionBackend
from harness.measure.case import Case
from harness.measure.flops import MODE_FACTORS
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from harness.measure.timing import TimingSettings
from harness.store import distributions
from harness.sweep.order import length_order

MODES = tuple(MODE_FACTORS)  # fwd, fwd-grad, bwd, fwdbwd
PASSES = ("fwd", "fwdbwd")  # the default modes
# The problem's axes besides the length, in the order a sweep's loops nest (the last varies
# fastest), with their values when a sweep names none
AXES = ("dtype", "batch", "heads", "kv_heads", "head_dim", "q_len", "documents", "causal",
        "distribution")  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """One point of the grid of the problem's axes other than the length."""

    dtype: torch.dtype = torch.float32
    batch: int = 1
    heads: int = 4
    kv_heads: int | None = None  # None: as many as heads
    head_dim: int = 64
    q_len: int | None = None  # None: the length
    documents: int = 1
    causal: bool = False
    distribution: str = distributions.DEFAULT  # of q, k, v (``--inputs``; column ``inputs``)


@dataclass(frozen=True)
class SweepConfig:
    lengths: tuple[int, ...]
    backends: tuple[str, ...]
    out_dir: Path
    passes: tuple[str, ...] = PASSES  # the modes (``MODES``), named "pass" in results
    device: str = "cpu"
    # each axis of the problem: the values to sweep (``Shape``)
    dtype: tuple[torch.dtype, ...] = (torch.float32,)
    batch: tuple[int, ...] = (1,)
    heads: tuple[int, ...] = (4,)
    kv_heads: tuple[int | None, ...] = (None,)
    head_dim: tuple[int, ...] = (64,)
    q_len: tuple[int | None, ...] = (None,)
    documents: tuple[int, ...] = (1,)
    causal: tuple[bool, ...] = (False,)
    distribution: tuple[str, ...] = (distributions.DEFAULT,)  # ``distributions.NAMES``
    seed: int = 0
    # Backend parameters given on the command line, by field name of the backends' Params
    # (window, block_size, n_hashes, ...), each with the values to sweep; each backend takes
    # the ones it has, and is swept over their product. ``causal`` is an axis, not here.
    param_grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    timing: TimingSettings = field(default_factory=TimingSettings)
    case_timeout_s: float = 300.0  # per process
    processes: int = 1  # fresh processes per case, one after another (``harness.sweep.repeats``)
    check_rows: int = 128
    resume: bool = False
    threads: int | None = None
    # Modules imported before the backends are looked up (``--import``): outside backends. The
    # case processes import them too (their forkserver preloads them).
    imports: tuple[str, ...] = ()
    # How the cases run, not what they measure (neither is part of a run's identity for
    # --resume): the order of the lengths, and the seconds after which no case is started
    # (the finished ones are kept; --resume runs the rest).
    order: str = "ascending"
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        for axis in AXES:  # one value stands for a grid of one
            value = getattr(self, axis)
            if not isinstance(value, tuple):
                object.__setattr__(self, axis, (value,))

    @property
    def param_overrides(self) -> tuple[tuple[str, Any], ...]:
        """The parameters given a single value (the grid's others are left out)."""
        return tuple((k, v[0]) for k, v in self.param_grid if len(v) == 1)

    def shapes(self) -> list[Shape]:
        """Every point of the axes' grid, the last axis of ``AXES`` varying fastest."""
        values = [getattr(self, axis) for axis in AXES]
        return [
            Shape(**dict(zip(AXES, point, strict=True))) for point in itertools.product(*values)
        ]

    def variants(self, name: str, causal: bool = False) -> list[AttentionBackend]:
        """``name`` with each combination of the values given for its parameters, and the
        shape's ``causal`` where it has that parameter (one without it refuses causal inputs)."""
        cls = get_backend_class(name)
        names = {f.name for f in dataclasses.fields(cls.Params)}
        grid = [(k, v) for k, v in self.param_grid if k in names and k != "causal"]
        fixed = {"causal": causal} if "causal" in names else {}
        keys = [k for k, _ in grid]
        return [
            cls(cls.Params(**dict(zip(keys, point, strict=True)), **fixed))
            for point in itertools.product(*(v for _, v in grid))
        ]

    def make_backend(self, name: str) -> AttentionBackend:
        """``name`` with the first value of each of its parameters (to describe it)."""
        return self.variants(name, self.causal[0])[0]

    def inputs(self, seq_len: int, pass_: str, shape: Shape | None = None) -> Inputs:
        s = shape or self.shapes()[0]
        return Inputs(
            batch=s.batch,
            heads=s.heads,
            seq_len=seq_len,
            head_dim=s.head_dim,
            dtype=s.dtype,
            device=self.device,
            seed=self.seed,
            requires_grad=pass_ != "fwd",
            kv_heads=s.kv_heads,
            q_len=s.q_len,
            documents=s.documents,
            causal=s.causal,
            distribution=s.distribution,
        )

    def cases(self) -> list[Case]:
        """Every (length, shape, backend variant, mode), length by length (``length_order``):
        every backend at one length before the next, so that a sweep shows the whole picture
        early. A failure for lack of memory or time skips a backend's longer lengths, whichever
        order they come in (``harness.sweep.runner``)."""
        shapes = self.shapes()
        made = {
            (name, causal): self.variants(name, causal)
            for name in self.backends
            for causal in self.causal
        }
        return [
            Case(backend, self.inputs(n, p, shape), p, self.timing, self.check_rows)
            for n in length_order(self.lengths, self.order)
            for shape in shapes
            for name in self.backends
            for backend in made[(name, shape.causal)]
            for p in self.passes
        ]
