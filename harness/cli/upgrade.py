"""Runs of older formats (``harness.store.records.FORMAT_VERSION``). Format 1, from before rows
carried their family's facts: ``fill_facts`` computes them from the registered backends when such a
run is read. ``attention-bench upgrade RUN_DIR`` rewrites a run of any older format in this one
(format 2's names are renamed as any reader reads them), so that it reads without the backends
(and without torch) and can be resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.store import storage
from harness.store.records import FACT_COLUMNS, FORMAT_VERSION, has_facts


def _backend(name: str, params: str):
    from harness.measure.registry import get_backend_class

    try:
        cls = get_backend_class(name)
        return cls(cls.Params(**json.loads(params)))
    except (KeyError, TypeError, ValueError):
        return None  # a backend this version no longer has: its facts stay unknown


def fill_facts(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``records.FACT_COLUMNS`` computed from its backends; ``RunFolderError`` where
    they cannot be imported (torch missing)."""
    try:
        from harness.measure import registry

        registry.backend_names()
    except ImportError as exc:
        raise storage.RunFolderError(
            f"a run of format 1, without its backends' facts, and the backends cannot be "
            f"imported here ({exc}): run 'attention-bench upgrade RUN_DIR' once where they can"
        ) from None

    made = {key: _backend(*key) for key in set(zip(df["backend"], df["params"], strict=True))}
    facts: dict[str, list] = {c: [] for c in FACT_COLUMNS}
    for row in df.to_dict("records"):
        b = made[(row["backend"], row["params"])]
        if b is None:
            known = {"flops": None, "promise": "", "sparse": row.get("family") != "full",
                     "yardstick": False, "implementation": "ours", "pattern": ""}  # fmt: skip
        else:
            counted = row["pass"] in ("fwd", "fwdbwd")
            shape = [int(row[c]) for c in ("batch", "heads", "seq_len", "head_dim")]
            from harness.measure.inputs import Inputs

            inputs = Inputs(*shape, seed=int(row["seed"]))
            known = b.row_facts(inputs, row["pass"] if counted else "fwd")
            if not counted:
                known["flops"] = None  # a pass whose FLOPs this version does not count
        for column in FACT_COLUMNS:
            facts[column].append(known[column])
    return df.assign(**facts)


def upgrade(run_dir: Path) -> bool:
    """Rewrite ``run_dir`` in this version's format: results.csv with its family facts (format
    1 lacks them: computed from the backends) and this version's names (read in, format 2),
    meta.json with its format version; False when it is in this format already."""
    df = storage.read_results(run_dir)  # renamed as it is read
    meta = storage.read_meta(run_dir)
    current = meta.get("format_version", 1) >= FORMAT_VERSION
    if current and has_facts(df.columns):
        return False
    storage.rewrite_results(run_dir, df if has_facts(df.columns) else fill_facts(df))
    storage.write_meta(run_dir, {**meta, "format_version": FORMAT_VERSION})
    return True
