import re

import pytest

from harness import storage
from harness.app import main
from harness.comparison import match
from tests.synthetic_runs import LONGFORMER, NAIVE, SDPA, write_run


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


def test_no_common_case_is_bad_input(tmp_path, capsys):
    a = write_run(tmp_path / "a", series=(NAIVE,), passes=("fwd",))
    b = write_run(tmp_path / "b", series=(SDPA,), passes=("fwd",))
    assert main(["report", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "no case in common" in err and err.count("\n") == 1
