"""Each backend's memory estimate against the peak measured by the sweeps stored here.

Reads every ``*/results.csv`` beside this script, computes ``estimate_bytes`` with the code as
it is now for each ``ok`` row (backend built from the row's ``backend`` and ``params``, inputs
from its shape, dtype, device, seed and pass; thread count from ``threads``, which the CPU flash
kernel's tiles depend on), and writes ``estimates.md``. Run from the repository root:

    .venv/bin/python results/memory-estimates-cpu-4k/estimates.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository, when run as a script

import attention_impls  # noqa: E402, F401  (registers the backends)
from harness.measure.inputs import DTYPES, Inputs  # noqa: E402
from harness.measure.registry import get_backend_class  # noqa: E402
from harness.store.records import Status  # noqa: E402

MIB = 2**20
LOW, HIGH = 0.75, 1.25  # the bound on estimate / peak


def estimate(row: pd.Series) -> int:
    cls = get_backend_class(row["backend"])
    params = {
        k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(row["params"]).items()
    }
    backend = cls(cls.Params(**params))
    inputs = Inputs(
        int(row["batch"]),
        int(row["heads"]),
        int(row["seq_len"]),
        int(row["head_dim"]),
        DTYPES[row["dtype"]],
        row["device"],
        int(row["seed"]),
        requires_grad=row["pass"] == "fwdbwd",
    )
    torch.set_num_threads(int(row["threads"]))
    return backend.estimate_bytes(inputs)


def table(runs: list[Path]) -> pd.DataFrame:
    rows = []
    for run in runs:
        df = pd.read_csv(run / "results.csv")
        for _, row in df[df.status == Status.OK].iterrows():
            est, peak = estimate(row), int(row["peak_mem_bytes"])
            shape = f"{row['batch']}x{row['heads']}x{row['seq_len']}x{row['head_dim']}"
            rows.append(
                {
                    "run": run.name,
                    "backend": row["backend"],
                    "params": row["params"],
                    "shape": shape,
                    "pass": row["pass"],
                    "estimate MiB": est / MIB,
                    "peak MiB": peak / MIB,
                    "estimate/peak": est / peak if peak else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def main() -> int:
    runs = sorted(p.parent for p in HERE.glob("*/results.csv"))
    df = table(runs)
    inside = df["estimate/peak"].between(LOW, HIGH)
    lines = [
        "# Memory estimates against measured peaks (CPU, 4K tokens)",
        "",
        "Written by `estimates.py` from the sweeps in the folders beside it: `estimate_bytes` of",
        "the code at the time of writing against each case's `peak_mem_bytes` (CPU: resident-set",
        "high-water mark beyond the inputs). Shape: batch x heads x length x head dim, float32.",
        "",
        f"{len(df)} cases; estimate/peak from {df['estimate/peak'].min():.3f} to "
        f"{df['estimate/peak'].max():.3f}; {int((~inside).sum())} outside {LOW}..{HIGH}.",
        "",
        "| run | backend | params | shape | pass | estimate MiB | peak MiB | estimate/peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        flag = "" if LOW <= r["estimate/peak"] <= HIGH else " ⚠"
        lines.append(
            f"| {r['run']} | {r['backend']} | `{r['params']}` | {r['shape']} | {r['pass']} | "
            f"{r['estimate MiB']:.1f} | {r['peak MiB']:.1f} | {r['estimate/peak']:.3f}{flag} |"
        )
    (HERE / "estimates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[6:7]))
    return 0 if inside.all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
