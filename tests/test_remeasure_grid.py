"""Re-measurement after a compare picks the judged cases at their own point of the grid."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analyse.rules import Verdict
from harness.cli.app import _cases_to_remeasure
from harness.sweep.config import SweepConfig


def test_only_the_judged_point_of_the_grid_is_measured_again(tmp_path: Path) -> None:
    config = SweepConfig(
        lengths=(128, 256), backends=("full-naive", "longformer"), out_dir=tmp_path,
        head_dim=(16, 32), causal=(False, True), param_grid=(("window", (8, 16)),),
    )  # fmt: skip
    cases = config.cases()
    target = next(
        c for c in cases
        if c.backend.name == "longformer" and c.inputs.head_dim == 32 and c.inputs.causal
        and c.inputs.seq_len == 256 and c.pass_ == "fwdbwd" and c.backend.params.window == 16
    )  # fmt: skip
    i = target.inputs
    row = {"backend": target.backend.label(), "pass": "fwdbwd", "seq_len": 256.0, "batch": 1,
           "heads": i.heads, "head_dim": 32, "dtype": "float32", "seed": 0, "q_len": 256,
           "kv_heads": i.heads, "documents": 1, "causal": True}  # fmt: skip
    table = pd.DataFrame([{**row, "verdict": Verdict.REGRESSED},
                          {**row, "head_dim": 16, "verdict": Verdict.SAME}])  # fmt: skip
    assert [c.key() for c in _cases_to_remeasure(config, table)] == [target.key()]
