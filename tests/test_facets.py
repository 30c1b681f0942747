"""Reports of a grid run (``harness.analyse.grid``): a section per facet, the fastest backend per
point and length, derived columns matched at the same point of the grid, terminal tables that
fit 120 columns; and a run of one shape reported as before."""

from __future__ import annotations

import re
from dataclasses import replace

import pandas as pd
import pytest

from harness.analyse import analysis, grid
from harness.analyse.derived import derived_columns
from harness.cli.app import main, with_derived
from harness.present import verdicts
from harness.present.facets import short_labels
from harness.present.summary import summary_tables
from harness.store import storage
from harness.store.records import DERIVED, Status
from tests.synthetic_runs import (
    GRID_LENGTHS,
    GRID_MODES,
    LONGFORMER,
    SDPA,
    write_grid_run,
    write_run,
)

WIDTH = 120


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    return write_grid_run(tmp_path_factory.mktemp("grid") / "run")


@pytest.fixture(scope="module")
def reported(grid_run):
    assert main(["report", str(grid_run)]) == 0
    return grid_run


def test_the_axes_that_vary(grid_run, tmp_path):
    df = storage.read_results(grid_run)
    assert grid.varying_axes(df) == ["pass", "head_dim", "causal"]
    one = storage.read_results(write_run(tmp_path / "one"))
    assert grid.varying_axes(one) == ["pass"]  # q_len = n at every length is no facet
    decode = write_run(tmp_path / "decode", series=(SDPA,), passes=("fwd",))
    for q in (1, 128):
        for result in SDPA.rows(pass_="fwd", shape={"q_len": q}):
            storage.append_result(decode, result)
    assert grid.varying_axes(storage.read_results(decode)) == ["q_len"]


def test_a_section_per_facet_and_few_figures(reported):
    md = (reported / "report.md").read_text()
    df = storage.read_results(reported)
    headings = re.findall(r"^### (.+)$", md, flags=re.M)
    expected = {(h, c, m) for h, c, m in zip(df["head_dim"], df["causal"], df["pass"], strict=True)}
    assert len(headings) == len(expected) == 2 * 2 * len(GRID_MODES)
    for head_dim, causal, mode in expected:
        words = ("causal" if causal else "not causal", f"head_dim {head_dim}")
        assert any(all(w in h for w in words) and h.endswith(_mode(mode)) for h in headings)
    figures = re.findall(r"\]\(([^)]+\.png)\)", md)
    assert 0 < len(figures) <= 12 and len(set(figures)) == len(figures)
    for name in figures:
        assert (reported / name).stat().st_size > 0
    # the exponent is fitted per combination: a row per series, pass and point
    exps = analysis.exponents(df)
    assert len(exps) == len(exps.drop_duplicates(["label", "pass", "head_dim", "causal"]))
    assert re.search(r"^\| backend +\| pass +\| shape ", md.split("## Scaling exponents")[1], re.M)


def _mode(mode: str) -> str:
    return {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}[mode]


def test_the_fastest_backend_per_point_and_length(reported):
    df = storage.read_results(reported)
    best = analysis.best_backends(df)
    ok = df[df["status"] == Status.OK]
    for (mode, head_dim, causal, n), at in ok.groupby(["pass", "head_dim", "causal", "seq_len"]):
        ranked = at.sort_values("time_median_ms")
        row = best[(best["pass"] == mode) & (best["head_dim"] == head_dim)
                   & (best["causal"] == causal) & (best["seq_len"] == n)]  # fmt: skip
        assert len(row) == 1
        assert row["label"].iloc[0] == ranked["label"].iloc[0]
        ratio = ranked["time_median_ms"].iloc[1] / ranked["time_median_ms"].iloc[0]
        assert row["ratio"].iloc[0] == pytest.approx(ratio)
    # the winner differs between points of the grid: no point stands for the others
    assert best["label"].nunique() > 1
    md = (reported / "report.md").read_text()
    section = md.split("## Fastest backend per length and shape")[1].split("\n## ")[0]
    assert len([line for line in section.splitlines() if line.startswith("| ")]) == len(best) + 1


def test_derived_columns_at_the_same_point_of_the_grid(grid_run):
    df = storage.read_results(grid_run)
    out = derived_columns(df, "NVIDIA H100 80GB HBM3")
    ok = out["status"] == Status.OK
    assert out.loc[ok, "tflops"].to_numpy() == pytest.approx(
        (out.loc[ok, "flops"] / out.loc[ok, "time_median_ms"] * 1e3 / 1e12).to_numpy()
    )
    assert out.loc[ok, "peak_fraction"].to_numpy() == pytest.approx(
        out.loc[ok, "tflops"].to_numpy() / 989.0
    )
    key = ["pass", "seq_len", "head_dim", "causal"]
    sdpa = out[out["backend"] == "full-sdpa"].set_index(key)
    longformer = out[(out["backend"] == "longformer") & ok]
    for _, r in longformer.iterrows():
        theirs = sdpa.loc[tuple(r[key])]
        assert r["speedup_vs_full-sdpa"] == pytest.approx(
            theirs["time_median_ms"] / r["time_median_ms"]
        )
        assert r["memory_saving_vs_full-sdpa"] == pytest.approx(
            theirs["peak_mem_bytes"] / r["peak_mem_bytes"]
        )
    # a yardstick at head_dim 64 is no yardstick for head_dim 128: the speedups differ
    at = longformer[(longformer["pass"] == "fwd") & ~longformer["causal"]]
    by_dim = at.groupby("head_dim")["speedup_vs_full-sdpa"].apply(list)
    assert by_dim[64] != pytest.approx(by_dim[128])
    skipped = out[out["status"] == Status.SKIPPED]
    assert len(skipped) and skipped["speedup_vs_full-sdpa"].isna().all()


def test_a_finished_sweep_stores_the_derived_columns(tmp_path):
    run = write_grid_run(tmp_path / "run", head_dims=(64,), modes=("fwd",))
    stored = with_derived(run, storage.read_meta(run))
    again = storage.read_results(run)
    assert list(again.columns) == list(stored.columns)
    assert set(DERIVED) <= set(again.columns) and "speedup_vs_full-sdpa" in again.columns
    # a re-measurement round appends full-sdpa at 1K twice as slow: its last row stands for it
    first = next(SDPA.rows(GRID_LENGTHS[:1], "fwd", scale=2 * 20.0 / SDPA.time_at_1k))
    storage.append_result(run, replace(first, round=2))
    assert pd.isna(storage.read_results(run)["tflops"].iloc[-1])  # appended without them
    rows = with_derived(run, storage.read_meta(run))
    assert len(rows) == len(again) + 1  # every row kept, rounds included
    lf = rows[(rows["backend"] == "longformer") & (rows["seq_len"] == GRID_LENGTHS[0])
              & ~rows["causal"].astype(bool)]  # fmt: skip
    before = again.loc[lf.index, "speedup_vs_full-sdpa"]
    assert lf["speedup_vs_full-sdpa"].to_numpy() == pytest.approx(2 * before.to_numpy())
    assert rows["tflops"].iloc[-1] == pytest.approx(again["tflops"].iloc[0] / 2)


def test_the_summary_fits_a_terminal_with_a_table_per_facet(grid_run):
    df = storage.read_results(grid_run)
    text = summary_tables(df)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    titles = [line for line in text.splitlines() if line.startswith("[")]
    assert len(titles) == len(grid.facets(df)) == 2 * 2 * len(GRID_MODES)
    assert "longformer(window=128)" in text and "longformer(window=256)" in text
    tables = text.split("\nnot measured:")[0]
    assert "dilation=1" not in tables  # the same in every variant: left out of the short label
    # a narrow terminal too, with every length of a longer run
    wide = write_run(grid_run.parent / "long", series=(SDPA, LONGFORMER))
    narrow = summary_tables(storage.read_results(wide), width=80)
    assert max(len(line) for line in narrow.splitlines()) <= 80


def test_short_labels_stay_distinct():
    labels = ["full-sdpa", "full-sdpa(causal)", "longformer(window=128, dilation=1)",
              "longformer(window=256, dilation=1)", "longformer(window=256, dilation=1, causal)",
              "bigbird(block_size=64, global_blocks=1, random_blocks=3)"]  # fmt: skip
    short = short_labels(labels)
    assert len(set(short.values())) == len(labels)
    assert short["longformer(window=128, dilation=1)"] == "longformer(window=128)"
    assert short["longformer(window=256, dilation=1, causal)"] == "longformer(window=256, causal)"
    assert short["full-sdpa(causal)"] == "full-sdpa(causal)"
    assert short["bigbird(block_size=64, global_blocks=1, random_blocks=3)"] == "bigbird"


def test_compare_of_two_grid_runs_has_a_table_per_point(grid_run, tmp_path, capsys):
    new = write_grid_run(tmp_path / "new", modes=("fwd",))
    base = write_grid_run(tmp_path / "base", modes=("fwd",))
    assert main(["compare", str(base), str(new)]) in (0, 3)
    out = capsys.readouterr().out
    table = out.split("\n\n", 1)[1].split("; written to ")[0]  # up to the counts (paths)
    assert max(len(line) for line in table.splitlines()) <= WIDTH
    points = {line for line in table.splitlines() if line.endswith(":") and "head_dim" in line}
    assert points == {"head_dim 64, not causal:", "head_dim 64, causal:",
                      "head_dim 128, not causal:", "head_dim 128, causal:"}  # fmt: skip
    compared = pd.read_csv(new / verdicts.COMPARE_CSV)
    assert len(compared) == len(storage.read_results(new))  # no two points merged
    md = (new / "vs-base" / "report.md").read_text()
    assert re.search(r"^\| backend +\| pass +\| shape ", md, flags=re.M)


def test_a_run_of_one_shape_has_no_facets(tmp_path):
    run = write_run(tmp_path / "one")
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "### " not in md and "Fastest backend" not in md
    assert not re.search(r"^\| backend .*\| shape ", md, flags=re.M)  # no table names a point
    assert "## Results: forward\n" in md and "## Results: forward + backward\n" in md
