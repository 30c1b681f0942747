"""Run folders with made-up results of known shape (exponents, crossovers, statuses), written
exactly as a sweep writes them, for the report's tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from harness.store import storage
from harness.store.records import CaseResult, Status

# The grid point of a row where a test names none: one shape, queries as many as keys
SHAPE = {"batch": 1, "heads": 4, "head_dim": 64, "q_len": None, "kv_heads": 4, "documents": 1,
         "causal": False, "inputs": "gaussian"}  # fmt: skip


def facts(backend: str, params: dict, n: int, pass_: str, shape: dict = SHAPE) -> dict:
    """The family facts a sweep stores for this backend (none for a made-up backend)."""
    try:
        cls = get_backend_class(backend)
    except KeyError:
        return {"sparse": True, "yardstick": False, "implementation": "ours"}
    inputs = Inputs(shape["batch"], shape["heads"], n, shape["head_dim"], q_len=shape["q_len"],
                    kv_heads=shape["kv_heads"], documents=shape["documents"],
                    causal=shape["causal"], distribution=shape["inputs"])  # fmt: skip
    return cls(cls.Params(**params)).row_facts(inputs, pass_)


LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)
ERRORS = {"gaussian": 0.6, "structured": 0.25}
# samples of a case that cannot be believed: quartiles 0.5 and 2.5 of the median, IQR 2x it
WIDE = (0.4, 0.5, 1, 2.5, 3)


@dataclass(frozen=True)
class Series:
    backend: str
    family: str
    params: dict
    time_exp: float  # time_ms = time_at_1k * (n / 1024) ** time_exp
    time_at_1k: float
    mem_exp: float
    mem_at_1k: float  # bytes
    status: dict[int, str] = field(default_factory=dict)  # length -> non-ok status
    label: str = ""
    wide: tuple[int, ...] = ()  # lengths whose samples spread wider than their median
    conditions: dict[int, dict] = field(default_factory=dict)  # length -> e.g. {"other_cpu": 0.5}
    # a peer's package (a made-up backend of a registered family); None: the backend's own
    implementation: str | None = None
    # err_vs_full of a sparse series per input distribution (full attention's is 0)
    errors: dict[str, float] = field(default_factory=lambda: dict(ERRORS))

    def rows(self, lengths=LENGTHS, pass_="fwd", device="cpu", dtype="float32", scale=1.0,
             shape: dict = SHAPE):  # fmt: skip
        shape = {**SHAPE, **shape}
        for n in lengths:
            status = self.status.get(n, Status.OK)
            ok = status == Status.OK
            t = scale * self.time_at_1k * (n / 1024) ** self.time_exp
            factors = WIDE if n in self.wide else (0.98, 1, 1.02)
            yield CaseResult(
                backend=self.backend,
                family=self.family,
                label=self.label or self.backend,
                params=json.dumps(self.params, sort_keys=True, separators=(",", ":")),
                seq_len=n,
                pass_=pass_,
                batch=shape["batch"],
                heads=shape["heads"],
                head_dim=shape["head_dim"],
                dtype=dtype,
                device=device,
                seed=0,
                q_len=n if shape["q_len"] is None else shape["q_len"],
                kv_heads=shape["kv_heads"],
                documents=shape["documents"],
                causal=shape["causal"],
                inputs=shape["inputs"],
                status=status,
                reason="" if ok else f"{status} at {n}",
                time_median_ms=t if ok else None,
                time_iqr_ms=(2.0 if n in self.wide else 0.05) * t if ok else None,
                repeats=5 if ok else None,
                time_samples_ms=" ".join(f"{t * f:.4f}" for f in factors) if ok else "",
                peak_mem_bytes=int(self.mem_at_1k * (n / 1024) ** self.mem_exp) if ok else None,
                max_err=2e-7 if ok else None,
                err_vs_full=self.error(shape["inputs"]) if ok else None,
                check_rows=128 if ok else None,
                threads=2,
                wall_s=1.0,
                **(self.conditions.get(n, {}) if ok else {}),
                **{
                    **facts(self.backend, self.params, n, pass_, shape),
                    **({"implementation": self.implementation} if self.implementation else {}),
                },
            )

    def error(self, inputs: str) -> float:
        return 0.0 if self.family == "full" else self.errors[inputs]


NAIVE = Series(
    "full-naive", "full", {"causal": False}, 2.0, 40.0, 2.0, 32 * 2**20, status={16384: Status.OOM}
)
SDPA = Series("full-sdpa", "full", {"causal": False}, 2.0, 10.0, 1.0, 2 * 2**20)
# Time 30 x against full-sdpa's 10 x^2 and full-naive's 40 x^2 (x = n / 1024): the curves cross
# at n = 3072 and 768. Memory 28 MiB x against 32 MiB x^2 (naive): crosses at 896.
LONGFORMER = Series(
    "longformer",
    "longformer",
    {"window": 256, "dilation": 1, "global_tokens": [], "causal": False},
    1.0,
    30.0,
    1.0,
    28 * 2**20,
    label="longformer(window=256)",
)
# Memory grows as n^1.5, more than its O(n) promise allows: 1.5 MiB x^1.5 is below full-sdpa's
# 2 MiB x at 512 and 1024 only, so it does not stay below. Time 15 x crosses sdpa at 1536.
LEAKY = Series(
    "bigbird",
    "bigbird",
    {"block_size": 64, "global_blocks": 1, "random_blocks": 3},
    1.0,
    15.0,
    1.5,
    1.5 * 2**20,
    label="bigbird(block_size=64)",
)
SERIES = (NAIVE, SDPA, LONGFORMER, LEAKY)
# full-sdpa with two times that cannot be believed: at 1K its samples spread twice as wide as
# their median, at 4K other processes used half the CPUs meanwhile; the rest are stable
UNSTABLE_SDPA = replace(SDPA, wide=(1024,), conditions={4096: {"other_cpu": 0.5}})


def meta(device: str = "cpu", name: str = "Test CPU", calibration_ms: float | None = None) -> dict:
    reference = {"before": {"median_ms": calibration_ms}, "after": {"median_ms": calibration_ms}}
    return {
        "created": "2026-11-23T12:00:00+00:00",
        "command": "run_bench.py --lengths 512 1024",
        "git_commit": "0123abc",
        "device": device,
        "device_name": name,
        "cpu": "Test CPU",
        "cpu_count": 2,
        "threads": 2,
        "python": "3.11.7",
        "torch": "2.13.0+cpu",
        "config": {
            "batch": 1,
            "heads": 4,
            "head_dim": 64,
            "dtype": "float32",
            "seed": 0,
            "timing": {"warmup_s": 0.2, "min_repeats": 5, "min_time_s": 0.5},
            "case_timeout_s": 300.0,
        },
        **({"calibration": reference} if calibration_ms is not None else {}),
    }


def write_run(
    folder: Path, series=SERIES, passes=("fwd", "fwdbwd"), scale=1.0, calibration_ms=None, **kw
) -> Path:
    """``calibration_ms``: the calibration's time at the start and end of the sweep."""
    folder.mkdir(parents=True, exist_ok=True)
    for pass_ in passes:
        factor = scale * (3.0 if pass_ == "fwdbwd" else 1.0)
        for s in series:
            for result in s.rows(pass_=pass_, scale=factor, **kw):
                storage.append_result(folder, result)
    storage.write_meta(folder, meta(kw.get("device", "cpu"), calibration_ms=calibration_ms))
    return folder


# A grid like the issue's: 3 lengths x head_dim 64, 128 x causal or not x 3 modes, with
# longformer at two windows, full-sdpa and bigbird (which has no causal variant: skipped there).
# Each series' time grows with head_dim by its own power and causal masking spares each its own
# share, so that the fastest backend differs between points of the grid.
GRID_LENGTHS = (1024, 2048, 4096)
GRID_MODES = ("fwd", "bwd", "fwdbwd")


@dataclass(frozen=True)
class GridSeries:
    series: Series
    head_dim_exp: float  # time x (head_dim / 64) ** head_dim_exp
    causal_factor: float  # time x this where causal
    causal: bool = True  # has a causal variant (else skipped at causal points)


GRID_SERIES = (
    GridSeries(replace(SDPA, time_at_1k=20.0), 1.0, 0.5),
    GridSeries(
        replace(LONGFORMER, params={**LONGFORMER.params, "window": 128}, time_at_1k=25.0), 1.8, 0.9
    ),
    GridSeries(LONGFORMER, 1.5, 0.7),
    GridSeries(LEAKY, 1.2, 1.0, causal=False),
)


def _label(backend: str, params: dict) -> str:
    cls = get_backend_class(backend)
    return cls(cls.Params(**params)).label()


def write_grid_run(
    folder: Path, grid=GRID_SERIES, lengths=GRID_LENGTHS, head_dims=(64, 128),
    causal=(False, True), modes=GRID_MODES, device="cpu", name="Test CPU",
) -> Path:  # fmt: skip
    """A run over that grid, written row by row as a sweep writes it (shape by shape)."""
    folder.mkdir(parents=True, exist_ok=True)
    factors = {"fwd": 1.0, "bwd": 2.0, "fwd-grad": 1.1, "fwdbwd": 3.0}
    for head_dim in head_dims:
        for is_causal in causal:
            shape = {"head_dim": head_dim, "causal": is_causal}
            for g in grid:
                s = g.series
                params = {**s.params, "causal": is_causal} if "causal" in s.params else s.params
                skipped = is_causal and not g.causal
                s = replace(
                    s,
                    params=params,
                    label=_label(s.backend, params),
                    status={n: Status.SKIPPED for n in lengths} if skipped else s.status,
                )
                scale = (head_dim / 64) ** g.head_dim_exp * (g.causal_factor if is_causal else 1)
                for mode in modes:
                    for result in s.rows(lengths, mode, device, scale=scale * factors[mode],
                                         shape=shape):  # fmt: skip
                        storage.append_result(folder, result)
    run_meta = meta(device, name)
    run_meta["config"].update(head_dim=list(head_dims), causal=list(causal))
    storage.write_meta(folder, run_meta)
    return folder


# A zoo run (issue 16): our backends and a peer's (a made-up backend of the longformer family,
# implementation "transformers": faster than ours at 8K only, with twice its memory), on Gaussian
# and on structured inputs, where the sparse backends' errors differ (``ERRORS``)
PEER_LONGFORMER = Series(
    "hf-longformer",
    "longformer",
    {"window": 256},
    0.75,
    45.0,
    1.0,
    56 * 2**20,
    label="hf-longformer(window=256)",
    implementation="transformers",
    errors={"gaussian": 0.61, "structured": 0.27},
)
ZOO_SERIES = (NAIVE, SDPA, PEER_LONGFORMER, LONGFORMER, LEAKY)
ZOO_LENGTHS = (1024, 2048, 4096, 8192)


def write_zoo_run(folder: Path, series=ZOO_SERIES, inputs=("gaussian", "structured"),
                  passes=("fwd",), lengths=ZOO_LENGTHS) -> Path:  # fmt: skip
    """Every series on each input distribution, shape by shape as a sweep writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in inputs:
        for s in series:
            for pass_ in passes:
                scale = 3.0 if pass_ == "fwdbwd" else 1.0
                for result in s.rows(lengths, pass_, scale=scale, shape={"inputs": name}):
                    storage.append_result(folder, result)
    run_meta = meta()
    run_meta["config"]["distribution"] = list(inputs)
    storage.write_meta(folder, run_meta)
    return folder
