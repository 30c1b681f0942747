"""The sweep configuration, built once by the command line and passed down, and the cases it
expands to."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.measure.backend import AttentionBackend
from harness.measure.case import Case
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from harness.measure.timing import TimingSettings
from harness.sweep.order import length_order

PASSES = ("fwd", "fwdbwd")


@dataclass(frozen=True)
class SweepConfig:
    lengths: tuple[int, ...]
    backends: tuple[str, ...]
    out_dir: Path
    passes: tuple[str, ...] = PASSES
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    batch: int = 1
    heads: int = 4
    head_dim: int = 64
    seed: int = 0
    # Backend parameters given on the command line, by field name of the backends' Params
    # (window, block_size, n_hashes, ...); each backend takes the ones it has.
    param_overrides: tuple[tuple[str, Any], ...] = ()
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

    def make_backend(self, name: str) -> AttentionBackend:
        cls = get_backend_class(name)
        names = {f.name for f in dataclasses.fields(cls.Params)}
        chosen = {k: v for k, v in self.param_overrides if k in names}
        return cls(cls.Params(**chosen))

    def inputs(self, seq_len: int, pass_: str) -> Inputs:
        return Inputs(
            batch=self.batch,
            heads=self.heads,
            seq_len=seq_len,
            head_dim=self.head_dim,
            dtype=self.dtype,
            device=self.device,
            seed=self.seed,
            requires_grad=pass_ == "fwdbwd",
        )

    def cases(self) -> list[Case]:
        """Every (length, backend, pass), length by length (``length_order``): every backend
        at one length before the next, so that a sweep shows the whole picture early. A failure
        for lack of memory or time skips a backend's longer lengths, whichever order they
        come in (``harness.sweep.runner``)."""
        backends = [self.make_backend(name) for name in self.backends]
        return [
            Case(backend, self.inputs(n, p), p, self.timing, self.check_rows)
            for n in length_order(self.lengths, self.order)
            for backend in backends
            for p in self.passes
        ]
