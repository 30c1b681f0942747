"""The harness as a Python library: the same sweep, run folder and reports as the command line.

    from pathlib import Path

    from harness import SweepConfig, TimingSettings, register, report, run_sweep
    from attention_impls.full import FullNaive

    @register
    class MyAttention(FullNaive):  # a backend of your own: any AttentionBackend
        name = "my-attention"

    if __name__ == "__main__":  # needed: every case's process imports this script again
        run = run_sweep(SweepConfig(lengths=(256, 512), backends=("my-attention", "full-sdpa"),
                                    out_dir=Path("results/mine"), passes=("fwd",)))
        report(run)

``run_sweep`` writes ``results.csv`` and ``meta.json`` exactly as ``attention-bench`` does (its
``command`` is the equivalent command line, so that ``attention-bench --resume --out RUN``
completes the run when ``config.imports`` names the modules of its outside backends). It lives
in the top layer, which may import all the others; ``harness`` re-exports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from harness.analyse.rules import CompareSettings
from harness.cli.recorded import command_line
from harness.measure.backend import AttentionBackend
from harness.measure.case import Case
from harness.measure.registry import backend_names, import_modules, register
from harness.measure.timing import TimingSettings
from harness.store import lock
from harness.sweep import guard, runner
from harness.sweep import meta as run_meta
from harness.sweep.config import SweepConfig

if TYPE_CHECKING:  # pandas and matplotlib: only when a comparison is made
    from harness.present.verdicts import Comparison

__all__ = ["AttentionBackend", "CompareSettings", "SweepConfig", "TimingSettings",
           "backend_names", "compare", "register", "report", "run_sweep"]  # fmt: skip


def run_sweep(
    config: SweepConfig, progress: Callable[[Iterable[Case]], Iterable[Case]] | None = None
) -> Path:
    """Sweep ``config`` into ``config.out_dir`` (created): results.csv and meta.json, as the
    command line writes them; returns the run folder. ``config.imports`` are imported first
    (modules that register backends). ``progress`` wraps the cases (e.g. ``tqdm``).

    Raises RuntimeError when the calling script has no ``if __name__ == "__main__":`` guard
    around the call (each case's process imports the script again), ``storage.RunFolderError``
    when the folder holds another run or results without ``resume=True``,
    ``lock.RunFolderBusy`` when another sweep writes into it."""
    guard.refuse_in_bootstrap()  # in a case's process, importing a script without the guard
    import_modules(config.imports)
    config = dataclasses.replace(config, out_dir=Path(config.out_dir))
    config.cases()  # unknown backends and bad parameters, before anything is written
    config.out_dir.mkdir(parents=True, exist_ok=True)
    with lock.locked(config.out_dir):
        run_meta.validate_folder(config)
        guard.require_main_guard(runner.case_context(config))
        meta = run_meta.start(config, command_line(config))
        runner.run_sweep(config, **({"progress": progress} if progress else {}))
        run_meta.finish(config, meta)
    return config.out_dir


def report(run_dir: Path | str) -> Path:
    """Write the run's report (report.md, report.html, figures) into it; returns report.md."""
    from harness.present import report as single

    return single.write(Path(run_dir))


def compare(
    baseline: Path | str,
    new_run: Path | str,
    out_dir: Path | str | None = None,
    settings: CompareSettings | None = None,
) -> Comparison:
    """What ``attention-bench compare BASELINE NEW_RUN`` does: a verdict for every case
    (compare.md, compare.csv, into ``out_dir``, default the new run) and the side-by-side
    report beside them (``vs-<BASELINE>/report.md``, ``.html``, ``ratios.png``). Returns the
    comparison: ``table`` (a verdict per case), ``outcome`` (``Outcome.PASSED``, ``REGRESSED``
    or ``INCONCLUSIVE``), ``path`` (compare.md)."""
    from harness.cli.commands import compare_runs

    out = None if out_dir is None else Path(out_dir)
    result, _ = compare_runs(Path(baseline), Path(new_run), settings or CompareSettings(), out)
    return result
