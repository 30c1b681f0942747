"""The stages of the GPU check (``harness.cli.gpu_check``), each returning a ``Stage``: what it
did and how long it took; and the environment the check records."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SANITY_LENGTH, SANITY_HEAD_DIMS, SANITY_BACKEND = 16384, (64, 128), "sdpa-flash"
SHAPE = ("--batch", "1", "--heads", "16")
SWEEP_HEAD_DIM = 64
TIMING = ("--min-time", "0.2", "--warmup", "0.1")
# a case's limit, compilation included (Flex compiles in each case's fresh process); a case
# started just before the sweep's budget ends may run this long
CASE_TIMEOUT_S = 90.0
# the dry run's lengths are shorter than the default windows and blocks: parameter -> flag, value
DRY_PARAMS = {"window": ("--window", "16"), "block_size": ("--block-size", "16"),
              "chunk_size": ("--chunk-size", "16")}  # fmt: skip
TESTS_LOG = "tests.log"
DONE, FAILED, CUT_SHORT, NOT_RUN = "done", "failed", "cut short", "not run"


@dataclass(frozen=True)
class Stage:
    """What one stage did: ``status`` is DONE, FAILED, CUT_SHORT or NOT_RUN."""

    name: str
    status: str
    seconds: float
    detail: str = ""


def _sweep_argv(
    device: str, folder: Path, lengths, head_dim: int, passes: list[str], timeout_s: float
) -> list[str]:
    """The options every sweep of the check shares, with its own."""
    return ["--device", device, "--dtype", "bfloat16", "--lengths", *map(str, lengths),
            "--head-dim", str(head_dim), "--passes", *passes, *SHAPE, *TIMING,
            "--case-timeout", f"{timeout_s:g}", "--out", str(folder)]  # fmt: skip


def run_sanity(
    out: Path, device: str, seq_len: int, resume: bool, timeout_s: float = CASE_TIMEOUT_S
) -> Stage:
    """``sdpa-flash`` forward at ``seq_len``, once per head_dim, each in its own run folder."""
    from harness.cli.app import main
    from harness.store.storage import RESULTS

    start, codes = time.monotonic(), []
    for head_dim in SANITY_HEAD_DIMS:
        folder = out / f"sanity-d{head_dim}"
        if resume and (folder / RESULTS).is_file():
            continue  # measured before: kept
        argv = _sweep_argv(device, folder, [seq_len], head_dim, ["fwd"], timeout_s)
        codes.append(main([*argv, "--backends", SANITY_BACKEND]))
    failed = [c for c in codes if c != 0]
    status = FAILED if failed else DONE
    detail = f"exit codes {codes}" if failed else f"{len(codes)} run(s)"
    return Stage("sanity", status, time.monotonic() - start, detail)


def pytest_summary(log: str) -> str:
    """pytest's last line ("3 passed, 35 skipped in 12.1s"), or "" when it never got there."""
    found = re.findall(r"^=+ (.+? in [\d.]+s(?: \([\d:]+\))?) =+$", log, re.M)
    return found[-1] if found else ""


def run_tests(out: Path, timeout_s: float) -> Stage:
    root = Path(__file__).resolve().parents[2]
    if not (root / "tests").is_dir():
        return Stage("tests", NOT_RUN, 0.0, f"no tests folder in {root} (run from a checkout)")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in [str(root), os.environ.get("PYTHONPATH")] if p),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-v",
        "-p",
        "no:cacheprovider",
        "tests",
    ]
    start = time.monotonic()
    with open(out / TESTS_LOG, "w") as log:
        proc = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its compile workers too
            proc.wait()
            code = None
    seconds = time.monotonic() - start
    said = pytest_summary((out / TESTS_LOG).read_text(errors="replace"))
    if code is None:
        return Stage("tests", CUT_SHORT, seconds, f"stopped at {timeout_s:.0f} s ({TESTS_LOG})")
    if code == 0:
        return Stage("tests", DONE, seconds, said)
    return Stage("tests", FAILED, seconds, f"pytest exit code {code}: {said or TESTS_LOG}")


def run_sweep(
    out: Path, device: str, lengths, backends, budget_s: float, resume: bool,
    timeout_s: float = CASE_TIMEOUT_S,
) -> Stage:  # fmt: skip
    from harness.cli.app import main
    from harness.store import storage

    folder = out / "sweep"
    argv = _sweep_argv(device, folder, lengths, SWEEP_HEAD_DIM, ["fwd", "fwdbwd"], timeout_s)
    argv += ["--order", "coarse-first", "--time-budget", f"{budget_s:.0f}"]
    argv += ["--backends", *backends] if backends else []
    argv += _dry_params(backends) if device == "cpu" else []
    argv += ["--resume"] if resume and (folder / storage.RESULTS).is_file() else []
    start = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - start
    if code != 0:
        return Stage("sweep", FAILED, seconds, f"exit code {code}")
    left = storage.read_meta(folder).get("time_budget", {}).get("cases_not_run", 0)
    if left:
        return Stage("sweep", CUT_SHORT, seconds, f"budget spent: {left} cases not run")
    return Stage("sweep", DONE, seconds)


def _dry_params(backends: list[str] | None) -> list[str]:
    """The dry run's small windows and blocks, for the parameters the backends have."""
    import dataclasses

    from harness.measure.registry import backend_names, get_backend_class

    fields = {f.name for name in backends or backend_names()
              for f in dataclasses.fields(get_backend_class(name).Params)}  # fmt: skip
    return [text for name, pair in DRY_PARAMS.items() if name in fields for text in pair]


def run_report(out: Path) -> Stage:
    from harness.present import report
    from harness.store.storage import RESULTS

    if not (out / "sweep" / RESULTS).is_file():
        return Stage("report", NOT_RUN, 0.0, "no sweep results")
    start = time.monotonic()
    try:
        path = report.write(out / "sweep")
    except Exception as exc:  # the rows are stored: the report can be written again later
        return Stage("report", FAILED, time.monotonic() - start, f"{type(exc).__name__}: {exc}")
    return Stage("report", DONE, time.monotonic() - start, str(path.relative_to(out)))


def environment(device: str) -> dict:
    """The machine as a run's meta.json describes it, whether triton and xformers import (and
    why not), and which backends can run here (``--list-backends``)."""
    import torch

    from harness.cli.listing import backend_table
    from harness.sweep import machine

    env = machine.describe(device, torch.get_num_threads())
    for module in ("triton", "xformers"):
        try:
            env[module] = __import__(module).__version__
        except Exception as exc:  # absent, or broken: said, not fatal
            env[module] = f"not available ({type(exc).__name__}: {exc})".splitlines()[0]
    if device != "cpu":
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["multiprocessors"] = props.multi_processor_count
    env["backends"] = backend_table(device, torch.bfloat16).to_dict("records")
    return env
