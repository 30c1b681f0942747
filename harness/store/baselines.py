"""Named baselines: stored runs under ``results/baselines/NAME/`` that later runs are checked
against (``baseline save RUN_DIR NAME``, then ``--compare-to NAME`` or ``compare``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from harness.store import runs, storage

BASELINES = Path("results") / "baselines"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # fullmatch: "$" would take a newline
_KEPT = (storage.RESULTS, storage.META)


class BaselineError(ValueError):
    """A bad baseline name, or a baseline that is missing or already there."""


def baseline_dir(name: str, root: Path = BASELINES) -> Path:
    if not _NAME.fullmatch(name):
        raise BaselineError(
            f"baseline name {name[:40]!r}{'...' if len(name) > 40 else ''}: use up to 100 "
            "letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return Path(root) / name


def save(run_dir: Path, name: str, root: Path = BASELINES, replace: bool = False) -> Path:
    """Copies the run's results and meta (checked readable first) to the named baseline."""
    run_dir = Path(run_dir)
    runs.load_run(run_dir)  # refuses a folder that a report or a comparison could not read
    target = baseline_dir(name, root)
    if target.exists() and not replace:
        raise BaselineError(f"baseline {name!r} exists at {target}: pass --replace to overwrite")
    if target.exists() and target.resolve() == run_dir.resolve():
        raise BaselineError(f"{run_dir} is baseline {name!r} already")
    with runs.writing(target):
        for file in _KEPT:
            shutil.copy2(run_dir / file, target / file)
    return target


def find(name: str, root: Path = BASELINES) -> Path:
    target = baseline_dir(name, root)
    if not (target / storage.RESULTS).is_file():
        known = sorted(p.name for p in Path(root).glob("*") if (p / storage.RESULTS).is_file())
        raise BaselineError(f"no baseline {name!r} in {root} (known: {', '.join(known) or 'none'})")
    return target
