from __future__ import annotations

import pandas as pd

from harness.present.summary import fmt_bytes, summary_tables
from harness.store.records import Status


def test_summary_has_a_cell_per_backend_and_length():
    df = pd.DataFrame([
        dict(backend="a", label="a(w=1)", seq_len=512, status=Status.OK, time_median_ms=1.234,
             time_iqr_ms=0.1, peak_mem_bytes=3 * 2**20, reason="", **{"pass": "fwd"}),
        dict(backend="a", label="a(w=1)", seq_len=1024, status=Status.OOM, time_median_ms=None,
             time_iqr_ms=None, peak_mem_bytes=None, reason="CUDA out of memory", **{"pass": "fwd"}),
        dict(backend="b", label="b", seq_len=512, status=Status.OK, time_median_ms=20.0,
             time_iqr_ms=1.0, peak_mem_bytes=5 * 2**30, reason="CHECK FAILED: x",
             **{"pass": "fwd"}),
    ])  # fmt: skip
    text = summary_tables(df)
    assert "1.23 ms ±0.1 ms, 3 MiB" in text
    assert Status.OOM in text and "CUDA out of memory" in text
    assert "20 ms ±1 ms, 5 GiB CHECK FAILED" in text
    header = text.splitlines()[1]
    assert "512" in header and "1024" in header
    assert "⚠" not in text and "unstable" not in text  # every time here is stable


def test_an_unstable_case_is_marked_and_explained():
    case = dict(
        backend="a",
        label="a(w=1)",
        status=Status.OK,
        peak_mem_bytes=2**20,
        reason="",
        **{"pass": "fwd"},
    )
    df = pd.DataFrame([
        dict(case, seq_len=512, time_median_ms=10.2, time_iqr_ms=19.0),  # IQR above the median
        dict(case, seq_len=1024, time_median_ms=20.0, time_iqr_ms=1.0, other_cpu=0.5),
        dict(case, seq_len=2048, time_median_ms=40.0, time_iqr_ms=1.0, other_cpu=0.01),
        dict(case, seq_len=4096, time_median_ms=80.0, time_iqr_ms=1.0,
             process_calibration_ms="20 21"),
    ])  # fmt: skip
    text = summary_tables(df)
    assert "10.2 ms ±19 ms, 1 MiB ⚠" in text
    assert "20 ms ±1 ms, 1 MiB ⚠" in text
    assert "40 ms ±1 ms, 1 MiB" in text and "40 ms ±1 ms, 1 MiB ⚠" not in text
    assert "80 ms ±1 ms, 1 MiB" in text and "80 ms ±1 ms, 1 MiB ⚠" not in text  # no yardstick
    _, section = text.split("\n\nunstable (the time may not be believed):\n")
    assert section.splitlines() == [
        "  a(w=1) @ 512 fwd: spread: the IQR of the samples is 186% of their median",
        "  a(w=1) @ 1024 fwd: busy: other processes used 50% of the CPUs",
    ]
    # the calibration ran 2x slower beside the 4K case than in the run as a whole
    text = summary_tables(df, run_calibration_ms=10.0)
    assert "80 ms ±1 ms, 1 MiB ⚠" in text
    assert "  a(w=1) @ 4096 fwd: speed: the calibration ran 2x slower" in text


def test_fmt_bytes():
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(2**33) == "8 GiB"
