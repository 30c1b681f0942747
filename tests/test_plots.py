import matplotlib.image
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.container import ErrorbarContainer

from harness.analyse import analysis
from harness.present import plots
from harness.present.comparison import match
from harness.store import storage
from tests.synthetic_runs import UNSTABLE_SDPA, write_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return storage.read_results(write_run(tmp_path_factory.mktemp("plots") / "run"))


def check_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 800 and height > 400


def test_scaling_figure_marks_failures(run, tmp_path):
    styles = plots.Styles(list(run["label"]))
    fig = plots.scaling_figure(run, "fwd", "test", styles)
    time_ax = fig.axes[0]
    # full-naive ran out of memory at 16K: an X on the top edge, in the series' colour
    xs = [line for line in time_ax.lines if line.get_marker() == "X"]
    assert len(xs) == 1 and list(xs[0].get_xdata()) == [16384]
    assert xs[0].get_color() == styles["full-naive"][0]
    assert time_ax.get_xscale() == "log" and time_ax.get_yscale() == "log"
    assert "ms" in time_ax.get_ylabel() and "MiB" in fig.axes[1].get_ylabel()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "full-naive" in legend and "out of memory (top edge)" in legend
    check_png(plots.save(fig, tmp_path / "scaling.png"))


def test_relative_figure_has_a_panel_per_reference_and_metric(run, tmp_path):
    rel = {r: analysis.relative_to(run, r) for r in ("full-naive", "full-sdpa")}
    fig = plots.relative_figure(rel, "fwdbwd", "test", plots.Styles(list(run["label"])))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "speedup vs full-naive",
        "speedup vs full-sdpa",
        "memory saving vs full-naive",
        "memory saving vs full-sdpa",
    ]
    check_png(plots.save(fig, tmp_path / "relative.png"))


def test_ratio_figure(run, tmp_path):
    m, _ = match(run, run.assign(time_median_ms=run["time_median_ms"] * 2))
    check_png(plots.save(plots.ratio_figure(m, "B / A"), tmp_path / "ratios.png"))


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_scaling_figure_draws_the_spread_of_time(run):
    styles = plots.Styles(list(run["label"]))
    fig = plots.scaling_figure(run, "fwd", "test", styles)
    time_ax, memory_ax = fig.axes
    bands = _bands(time_ax)
    assert len(bands) == len(styles)  # one per series, in its colour
    assert [to_rgb(b.get_facecolor()[0]) for b in bands] == [to_rgb(c) for c, _ in styles.values()]
    assert _bands(memory_ax) == []  # memory is one number per case: no spread
    assert plots.BAND_TEXT in [t.get_text() for t in fig.legends[0].get_texts()]


def _band_at(ax, n):
    ys = [y for b in _bands(ax) for x, y in b.get_paths()[0].vertices if x == n]
    return min(ys), max(ys)


def test_the_band_spans_the_quartiles_of_the_samples(tmp_path):
    df = storage.read_results(write_run(tmp_path / "run", (UNSTABLE_SDPA,), passes=("fwd",)))
    fig = plots.scaling_figure(df, "fwd", "test", plots.Styles(list(df["label"])))
    # samples 0.4, 0.5, 1, 2.5 and 3 times the 10 ms median at 1K; 0.98, 1, 1.02 times at 2K
    assert _band_at(fig.axes[0], 1024) == pytest.approx((5.0, 25.0))
    assert _band_at(fig.axes[0], 2048) == pytest.approx((39.6, 40.4))


def test_a_row_without_samples_gets_median_plus_minus_half_the_iqr():
    row = pd.Series({"time_median_ms": 10.0, "time_iqr_ms": 4.0, "time_samples_ms": ""})
    assert plots.quartiles(row) == (8.0, 12.0)
    # wider than the median: cut above zero, which a log axis cannot show
    assert plots.quartiles(row.replace(4.0, 30.0)) == (1.0, 25.0)
    assert plots.quartiles(row.drop(["time_iqr_ms", "time_samples_ms"])) == (10.0, 10.0)


def test_ratio_figure_has_the_intervals_of_the_time_ratios(run, tmp_path):
    slower = storage.read_results(write_run(tmp_path / "b", scale=2.0))
    m, _ = match(run, slower)
    fig = plots.ratio_figure(m, "B / A")
    time_ax, memory_ax = fig.axes
    bars = [c for c in time_ax.containers if isinstance(c, ErrorbarContainer)]
    segments = [s for c in bars for s in c.lines[2][0].get_segments()]
    assert len(segments) == m["time_ratio"].notna().sum() > 0
    for s in segments:  # every interval holds the ratio, 2x
        assert s[0][1] <= 2.0 <= s[1][1] and s[0][1] < s[1][1]
    assert memory_ax.containers == []  # one memory number per case: no interval
    assert plots.INTERVAL_TEXT in [t.get_text() for t in fig.legends[0].get_texts()]


def test_styles_are_the_same_in_every_figure():
    styles = plots.Styles(["a", "b", "c"])
    assert styles.subset(["c", "a"]) == {"a": styles["a"], "c": styles["c"]}
    assert len({m for _, m in styles.values()}) == 3


def test_length_labels():
    assert [plots.length_text(n) for n in (512, 1024, 16384, 1000)] == ["512", "1K", "16K", "1000"]
