from __future__ import annotations

import pandas as pd

from harness.summary import fmt_bytes, summary_tables


def test_summary_has_a_cell_per_backend_and_length():
    df = pd.DataFrame([
        dict(backend="a", label="a(w=1)", seq_len=512, status="ok", time_median_ms=1.234,
             time_iqr_ms=0.1, peak_mem_bytes=3 * 2**20, reason="", **{"pass": "fwd"}),
        dict(backend="a", label="a(w=1)", seq_len=1024, status="oom", time_median_ms=None,
             time_iqr_ms=None, peak_mem_bytes=None, reason="CUDA out of memory", **{"pass": "fwd"}),
        dict(backend="b", label="b", seq_len=512, status="ok", time_median_ms=20.0,
             time_iqr_ms=1.0, peak_mem_bytes=5 * 2**30, reason="CHECK FAILED: x",
             **{"pass": "fwd"}),
    ])  # fmt: skip
    text = summary_tables(df)
    assert "1.23 ms ±0.1 ms, 3 MiB" in text
    assert "oom" in text and "CUDA out of memory" in text
    assert "20 ms ±1 ms, 5 GiB CHECK FAILED" in text
    header = text.splitlines()[1]
    assert "512" in header and "1024" in header


def test_fmt_bytes():
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(2**33) == "8 GiB"
