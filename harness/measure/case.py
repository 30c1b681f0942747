"""One case: a backend on one input shape in one mode, with its timing settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.measure.backend import AttentionBackend
from harness.measure.inputs import Inputs, dtype_name
from harness.measure.timing import TimingSettings
from harness.store.records import CaseResult, Status, case_key


@dataclass(frozen=True)
class Case:
    backend: AttentionBackend
    inputs: Inputs
    pass_: str
    timing: TimingSettings
    check_rows: int

    def result(self, fields: dict[str, Any]) -> CaseResult:
        """The case's row: its description and its family's facts, with the measured
        ``fields`` (status, reason, numbers; unknown ones are left out)."""
        i, b = self.inputs, self.backend
        known = set(CaseResult.__dataclass_fields__)
        return CaseResult(
            backend=b.name,
            family=b.family,
            label=b.label(),
            params=b.params_json(),
            seq_len=i.seq_len,
            pass_=self.pass_,
            batch=i.batch,
            heads=i.heads,
            head_dim=i.head_dim,
            dtype=dtype_name(i.dtype),
            device=i.device,
            seed=i.seed,
            q_len=i.query_len,
            kv_heads=i.kv_heads_count,
            documents=i.documents,
            causal=i.causal,
            inputs=i.distribution,
            **b.row_facts(i, self.pass_),
            **{k: v for k, v in fields.items() if k in known},
        )

    def key(self) -> tuple:
        """What identifies the case in a results file (``records.case_key``; for --resume)."""
        return case_key(self.result({"status": Status.SKIPPED}).row())
