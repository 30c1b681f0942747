import matplotlib.image
import pytest

from harness import analysis, plots, storage
from harness.comparison import match
from tests.synthetic_runs import write_run

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


def test_styles_are_the_same_in_every_figure():
    styles = plots.Styles(["a", "b", "c"])
    assert styles.subset(["c", "a"]) == {"a": styles["a"], "c": styles["c"]}
    assert len({m for _, m in styles.values()}) == 3


def test_length_labels():
    assert [plots.length_text(n) for n in (512, 1024, 16384, 1000)] == ["512", "1K", "16K", "1000"]
