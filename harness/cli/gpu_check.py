"""``run_bench.py gpu-check``: what the first minutes of a lent GPU should run, as one command
that ends on time and leaves one folder ready to commit (``results/gpu-<gpu>-<dtype>-<lo>-<hi>``).

Stages, each within its share of ``--budget`` (450 s by default, so that the whole check stays
under 8 minutes of a machine whose lease is counted in minutes):

1. ``sanity``: SDPA's flash kernel (``sdpa-flash``) forward at 16K, bfloat16, batch 1, 16 heads,
   head_dim 64 and 128 (run folders ``sanity-d64``, ``sanity-d128``), its useful TFLOP/s shown
   beside FlashAttention-2's published range (``harness.analyse.published``).
2. ``tests``: the CUDA-marked tests (``pytest -m cuda``) in a process of their own, stopped at
   their share of the budget (at most ``TESTS_MAX_S``); the log is ``tests.log``.
3. ``sweep``: every registered backend (or ``--backends``), 1K to 64K, forward and
   forward+backward, bfloat16, batch 1, 16 heads, head_dim 64 (run folder ``sweep``). The lengths
   run coarse first (1K 4K 16K 64K, then 2K 8K 32K), so that a sweep the budget cuts short still
   spans the range; a backend that runs out of memory is not run at longer lengths.
4. ``report``: the sweep's report (``sweep/report.md``, ``.html``, figures).

``gpu-check.json`` records the environment and each stage's outcome and seconds; the summary,
``gpu-check.md``, is written from the folder's stored files (``harness.present.gpu_check_summary``)
and its headline printed last. ``--resume`` completes a folder: sanity runs already measured are
kept, the sweep resumes. ``--device cpu`` is the dry run CI does so that the check cannot rot:
the same stages at tiny lengths (windows and blocks to match, the sanity case at the longest);
the CUDA tests are collected, which imports every test module, and skip.

Exit codes: 0 every stage done and nothing failed; 1 a test failed, a case raised or its output
check failed; 3 nothing failed but something was cut short (a stage the budget left no time
for, a case's timeout); 2 bad input.

The budget shares are first guesses, to be tuned from the stage times the first GPU run records.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

from harness.cli.cli_args import PROG, Parser, UsageError, length, out_path, positive
from harness.cli.gpu_stages import (
    CASE_TIMEOUT_S,
    CUT_SHORT,
    FAILED,
    SANITY_LENGTH,
    Stage,
    environment,
    run_report,
    run_sanity,
    run_sweep,
    run_tests,
)
from harness.present.gpu_check_summary import CHECK_FILE
from harness.present.plots import length_text

GPU_LENGTHS = tuple(1024 * 2**i for i in range(7))  # 1K to 64K
DRY_LENGTHS = (128, 256)
BUDGET_S = 450.0
TESTS_MAX_S = 90.0
REPORT_S = 45.0  # kept for the report and the summary
STAGES = ("sanity", "tests", "sweep", "report")
LATE = "not run: no time left in the budget"


def build_parser() -> Parser:
    p = Parser(
        prog=f"{PROG} gpu-check",
        description="The GPU check: SDPA-flash sanity rate at 16K, the CUDA-marked tests, a "
        "bfloat16 sweep of every backend from 1K to 64K (fwd and fwdbwd) and its report, into "
        "one folder named after the GPU, within a time budget. '--device cpu' is the dry run.",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA; none is bad input), cuda[:N], or cpu: the dry run at tiny lengths",
    )
    p.add_argument(
        "--lengths",
        nargs="+",
        type=length,
        metavar="N",
        help="sweep lengths (default: 1K to 64K on CUDA, 128 256 on CPU)",
    )
    p.add_argument("--backends", nargs="+", metavar="NAME", help="sweep these (default: all)")
    p.add_argument(
        "--budget",
        type=positive(float, 24 * 3600.0),
        default=BUDGET_S,
        metavar="SECONDS",
        help=f"the whole check ({BUDGET_S:g})",
    )
    p.add_argument(
        "--case-timeout",
        type=positive(float, 3600.0),
        default=CASE_TIMEOUT_S,
        metavar="SECONDS",
        help="per case, compilation included; the sweep starts no case this long before its "
        f"share of the budget ends ({CASE_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="run only these (default: all)",
    )
    p.add_argument(
        "--out", type=out_path, help="its folder (default: results/gpu-<gpu>-<dtype>-<lo>-<hi>)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="complete the folder: keep sanity runs, resume the sweep",
    )
    return p


def default_folder(device_name: str, dry: bool, dtype: str, lengths: tuple[int, ...]) -> Path:
    """``results/gpu-h200-bf16-1k-64k`` for an "NVIDIA H200" (``.gitignore`` lets ``gpu-*`` in);
    ``results/dry-run-cpu-...`` on the CPU."""
    gpu = re.sub(r"[^a-z0-9]+", "-", device_name.lower().replace("nvidia", "")).strip("-")
    short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)
    name = "dry-run-cpu" if dry else f"gpu-{gpu}".rstrip("-")
    name += f"-{short}"
    lo, hi = (length_text(n).lower() for n in (min(lengths), max(lengths)))
    return Path("results") / f"{name}-{lo}-{hi}"


class Budget:
    """Seconds left of the check's budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


def _record(out: Path, state: dict) -> None:
    (out / CHECK_FILE).write_text(json.dumps(state, indent=1, default=str) + "\n")


def gpu_check(argv: list[str]) -> int:
    """``gpu-check [--device D] [--lengths N ...] [--backends ...] [--budget S] [--out DIR]``."""
    from harness.cli.cli_args import resolve_device
    from harness.present import gpu_check_summary

    args = build_parser().parse_args(argv)
    budget = Budget(args.budget)
    if args.device == "auto":
        import torch

        if not torch.cuda.is_available():
            raise UsageError(
                "no CUDA device here: the GPU check needs one ('--device cpu' runs it as a dry run)"
            )
    device = resolve_device(args.device)
    dry = device == "cpu"
    lengths = tuple(sorted(set(args.lengths or (DRY_LENGTHS if dry else GPU_LENGTHS))))
    env = environment(device)
    if not dry:
        import torch

        torch.cuda.empty_cache()  # the backend probes' memory, before the cases ask what is free
    out = args.out or default_folder(env["device_name"], dry, "bfloat16", lengths)
    if (out / CHECK_FILE).exists() and not args.resume:
        raise UsageError(
            f"{out} already holds a GPU check: --resume completes it, or another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    state = json.loads((out / CHECK_FILE).read_text()) if (out / CHECK_FILE).exists() else {}
    state.update(format=1, environment=env, budget_s=args.budget, dry_run=dry)
    state.setdefault("attempts", []).append(
        {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": [PROG, "gpu-check", *argv],
            "stages": [],
        }
    )
    stages = state["attempts"][-1]["stages"]
    print(f"gpu-check: {env['device_name']} -> {out} (budget {args.budget:g} s)", file=sys.stderr)

    def record(stage: Stage) -> None:
        stages.append(asdict(stage))
        _record(out, state)
        print(
            f"gpu-check: {stage.name}: {stage.status} in {stage.seconds:.0f} s {stage.detail}",
            file=sys.stderr,
        )

    _record(out, state)
    if "sanity" in args.stages:
        # on the CPU at the dry run's longest length: 16K would take minutes there
        sanity_length = max(lengths) if dry else SANITY_LENGTH
        record(run_sanity(out, device, sanity_length, args.resume, args.case_timeout))
    if "tests" in args.stages:
        share = min(TESTS_MAX_S, budget.left() - REPORT_S - args.case_timeout)
        record(run_tests(out, share) if share >= 10 else Stage("tests", CUT_SHORT, 0.0, LATE))
    if "sweep" in args.stages:
        share = budget.left() - REPORT_S - args.case_timeout
        record(
            run_sweep(out, device, lengths, args.backends, share, args.resume, args.case_timeout)
            if share >= 1
            else Stage("sweep", CUT_SHORT, 0.0, LATE)
        )
    if "report" in args.stages:
        record(run_report(out))
    summary = gpu_check_summary.write(out)
    print(gpu_check_summary.headline(out))  # last: a lent machine's reply holds the output's end
    print(f"gpu-check: {out} ({summary.name}, {CHECK_FILE}, run folders)", file=sys.stderr)
    return exit_code([Stage(**s) for s in stages], *gpu_check_summary.case_outcomes(out))


def exit_code(stages: list[Stage], failed_cases: int = 0, timed_out_cases: int = 0) -> int:
    """1 when something failed (a stage; a case that raised or failed its output check), else
    3 when something was cut short (a stage; a case that timed out), else 0."""
    if failed_cases or any(s.status == FAILED for s in stages):
        return 1
    return 3 if timed_out_cases or any(s.status == CUT_SHORT for s in stages) else 0
