"""meta.json of a sweep, written the same way by the command line and the Python API: the
machine and versions, the command, the configuration, the modules that brought outside
backends, and the calibration and machine conditions before and after the sweep. Beside it
``sweep.toml``, the resolved sweep (``harness.sweep.resolved``), which ``--config`` replays.

A resumption's description is appended to the run's first one (``"resumed"``), which must
describe the same sweep (``harness.store.resume``)."""

from __future__ import annotations

from typing import Any

import torch

from harness.measure import calibration, conditions, registry
from harness.measure.inputs import dtype_name
from harness.store import distributions, resume, storage
from harness.sweep import machine, resolved
from harness.sweep.config import AXES, SweepConfig


def describe_config(config: SweepConfig) -> dict:
    return {
        "lengths": list(config.lengths),
        "backends": {n: config.make_backend(n).params_dict() for n in config.backends},
        "passes": list(config.passes),
        "dtype": [dtype_name(d) for d in config.dtype],
        **{axis: list(getattr(config, axis)) for axis in AXES if axis != "dtype"},
        "params": {k: list(v) for k, v in config.param_grid},
        "seed": config.seed,
        "timing": config.timing.__dict__,
        "case_timeout_s": config.case_timeout_s,
        "processes": config.processes,
        "check_rows": config.check_rows,
    }


def validate_folder(config: SweepConfig) -> None:
    """Under the run folder's lock: the folder can take this sweep's rows. A resumption's
    earlier rows are read now, so that a folder that cannot be resumed is refused before
    anything runs (``storage.RunFolderError``: bad input)."""
    results = config.out_dir / storage.RESULTS
    if results.is_symlink() or (results.exists() and not results.is_file()):
        raise storage.RunFolderError(
            f"{results} is not a regular file: rows cannot be appended to it"
        )
    has_results = results.is_file() and results.stat().st_size > 0
    if has_results and not config.resume:
        raise storage.RunFolderError(
            f"{config.out_dir} already holds results: pass --resume to complete it, or "
            "another --out"
        )
    if has_results and not (config.out_dir / storage.META).exists():
        raise storage.RunFolderError(f"{config.out_dir} has results but no {storage.META}: not "
                                     "a run this harness can resume")  # fmt: skip
    if config.resume:
        storage.resumable_rows(config.out_dir)


def describe(config: SweepConfig, command: list[str]) -> dict[str, Any]:
    """meta.json of the run; for a resumption, the run's first description with this one
    appended (``storage.RunFolderError`` when it is another sweep)."""
    threads = config.threads or torch.get_num_threads()
    meta = machine.describe(config.device, threads, recordable(config, command))
    meta["config"] = describe_config(config)
    # what each input distribution of the run is, in this version's words, for its report
    meta["input_distributions"] = {n: distributions.description(n) for n in config.distribution}
    # where the backends outside attention_impls came from, for --resume and replays
    meta["imports"] = list(config.imports)
    meta["entry_points"] = registry.loaded_entry_points()
    if not config.resume or not (config.out_dir / storage.META).exists():
        return meta
    first = storage.read_meta(config.out_dir)
    changed = resume.differences(first, meta)
    if changed:
        raise storage.RunFolderError(
            f"--resume: {config.out_dir} is another sweep: {'; '.join(changed)}. A run folder "
            "holds one run: give its options (or none: '--resume --out RUN' repeats them), "
            "or start a new --out"
        )
    first.setdefault("resumed", []).append(meta)
    return first


def recordable(config: SweepConfig, command: list[str]) -> list[str]:
    """``command`` as meta.json keeps it, for ``--resume`` and ``--compare-to`` to repeat: one
    that read its options from a ``--config`` file (which may change or go) is written out
    whole, the resolved sweep's options followed by its ``--out``."""
    if not any(w == "--config" or w.startswith("--config=") for w in command[1:]):
        return command
    words = resolved.command_words(resolved.table(config))
    return [command[0], *words, "--out", str(config.out_dir)]


def start(config: SweepConfig, command: list[str]) -> dict[str, Any]:
    """Describe the run, measure the calibration and the machine's conditions before
    it, write meta.json and sweep.toml; returns the description for ``finish``."""
    meta = describe(config, command)
    resolved.write(config)
    meta.setdefault("conditions", {}).setdefault("before", conditions.snapshot(config.device))
    reference = calibration.time_calibration(config.device, config.timing, config.threads)
    meta.setdefault("calibration", {}).setdefault("before", reference)
    storage.write_meta(config.out_dir, meta)
    return meta


def finish(config: SweepConfig, meta: dict[str, Any]) -> None:
    """The calibration and the conditions after the sweep, into meta.json."""
    meta["calibration"]["after"] = calibration.time_calibration(
        config.device, config.timing, config.threads
    )
    meta["conditions"]["after"] = conditions.snapshot(config.device)
    storage.write_meta(config.out_dir, meta)
