import re
from dataclasses import replace

import matplotlib.image
import pytest

from harness.cli.app import main
from harness.present.comparison import match
from harness.store import storage
from tests.synthetic_runs import LONGFORMER, NAIVE, SDPA, UNSTABLE_SDPA, write_run


def test_match_pairs_the_same_cases_across_devices(tmp_path):
    a = storage.read_results(write_run(tmp_path / "a", passes=("fwd",)))
    b = storage.read_results(write_run(tmp_path / "b", passes=("fwd",), scale=0.5,
                                       device="cuda", dtype="bfloat16"))  # fmt: skip
    m, differ = match(a, b)
    assert differ == ["device", "dtype"]
    assert len(m) == len(a)
    both = m.dropna(subset=["time_ratio"])
    assert both["time_ratio"].to_numpy() == pytest.approx(0.5)
    assert both["memory_ratio"].to_numpy() == pytest.approx(1.0)
    naive_16k = m[(m["label"] == "full-naive") & (m["seq_len"] == 16384)]
    assert naive_16k["time_ratio"].isna().all()  # out of memory on both sides: no ratio


def test_comparison_report(tmp_path):
    a = write_run(tmp_path / "before", series=(NAIVE, SDPA, LONGFORMER))
    b = write_run(tmp_path / "after", series=(SDPA, LONGFORMER), scale=1.25)
    assert main(["report", str(a), str(b)]) == 0
    out = b / "vs-before"
    md = (out / "report.md").read_text()
    assert "24 cases in common; 12 only in A, 0 only in B" in md
    assert re.search(r"\| full-sdpa +\| fwd +\| 1\.25× +\| 1× +\| 6 ", md)
    assert (out / "ratios.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "report.html").exists()


def test_each_time_ratio_has_its_bootstrap_interval(tmp_path):
    a = storage.read_results(write_run(tmp_path / "a", passes=("fwd",)))
    b = storage.read_results(write_run(tmp_path / "b", passes=("fwd",), scale=1.25))
    m, _ = match(a, b)
    both = m.dropna(subset=["time_ratio"])
    assert (both["time_ratio_low"] < 1.25).all() and (both["time_ratio_high"] > 1.25).all()
    assert (both["time_ratio_high"] / both["time_ratio_low"] < 1.1).all()  # 2% spread a side
    assert m["time_ratio"].isna().equals(m["time_ratio_low"].isna())  # none without a ratio


def test_comparison_marks_a_case_unstable_on_either_side(tmp_path):
    # A: the hypervisor stole a fifth of the CPUs at 2K; the calibration ran 2x slower
    # beside the 8K case than in A as a whole, and as fast as in B as a whole beside B's
    ref_8k = {8192: {"process_calibration_ms": "20"}}
    sdpa_a = replace(SDPA, conditions={2048: {"steal": 0.2}, **ref_8k})
    sdpa_b = replace(UNSTABLE_SDPA, conditions={**UNSTABLE_SDPA.conditions, **ref_8k})
    a = write_run(tmp_path / "a", series=(sdpa_a,), passes=("fwd",), calibration_ms=10.0)
    b = write_run(tmp_path / "b", series=(sdpa_b,), passes=("fwd",), scale=1.25,
                  calibration_ms=20.0)  # fmt: skip
    assert main(["report", str(a), str(b)]) == 0
    md = (b / "vs-a" / "report.md").read_text()
    assert re.search(r"\| full-sdpa +\| fwd +\| 512 +\| 2\.5 ms +\| 3\.12 ms +\|", md)
    assert re.search(r"\| full-sdpa +\| fwd +\| 1K +\| 10 ms +\| 12\.5 ms ⚠ +\|", md)
    assert re.search(r"\| full-sdpa +\| fwd +\| 2K +\| 40 ms ⚠ +\| 50 ms +\|", md)
    notes = [line for line in md.split("## Per case")[1].splitlines() if line.startswith("- ")]
    assert notes == [
        "- ⚠ full-sdpa fwd at 1K: B: spread: the IQR of the samples is 200% of their median",
        "- ⚠ full-sdpa fwd at 2K: A: busy: the hypervisor stole 20% of the CPUs",
        "- ⚠ full-sdpa fwd at 4K: B: busy: other processes used 50% of the CPUs",
        "- ⚠ full-sdpa fwd at 8K: A: speed: the calibration ran 2x slower beside "
        "this case than at the start and end of the sweep",
    ]
    assert "How stable is a number" in md
    assert "95% bootstrap interval" in md
    assert matplotlib.image.imread(b / "vs-a" / "ratios.png").shape[1] > 800


def test_no_common_case_is_bad_input(tmp_path, capsys):
    a = write_run(tmp_path / "a", series=(NAIVE,), passes=("fwd",))
    b = write_run(tmp_path / "b", series=(SDPA,), passes=("fwd",))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "no case in common" in err and err.count("\n") == 1


def test_compare_writes_the_comparison_report_and_report_of_two_is_deprecated(tmp_path, capsys):
    a = write_run(tmp_path / "a", series=(SDPA,), passes=("fwd",))
    b = write_run(tmp_path / "b", series=(SDPA,), passes=("fwd",), scale=1.5)
    assert main(["compare", str(a), str(b), "--allow-inconclusive"]) in (0, 1)
    out = capsys.readouterr()
    assert (b / "compare.md").is_file() and (b / "vs-a" / "report.html").is_file()
    assert "comparison report" in out.out and "deprecated" not in out.err
    assert main(["report", str(a), str(b)]) == 0  # the alias still works, and says so
    assert "deprecated: 'compare RUN_A RUN_B'" in capsys.readouterr().err
