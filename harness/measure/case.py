"""One case: a backend on one input shape in one pass, with its timing settings."""

from __future__ import annotations

from dataclasses import dataclass

from harness.measure.backend import AttentionBackend
from harness.measure.inputs import Inputs, dtype_name
from harness.measure.timing import TimingSettings


@dataclass(frozen=True)
class Case:
    backend: AttentionBackend
    inputs: Inputs
    pass_: str
    timing: TimingSettings
    check_rows: int

    def key(self) -> tuple:
        """What identifies a case in a results file (used by --resume)."""
        i = self.inputs
        return (
            self.backend.name,
            self.backend.params_json(),
            i.seq_len,
            self.pass_,
            i.batch,
            i.heads,
            i.head_dim,
            dtype_name(i.dtype),
            i.device,
            i.seed,
        )
