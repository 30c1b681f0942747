"""``--list-backends``: every registered backend, and a reason wherever it cannot run."""

from __future__ import annotations

import torch

import attention_impls  # noqa: F401  (registers every backend)
from harness.cli.listing import backend_table
from harness.measure.registry import backend_names


def test_every_backend_is_listed_with_a_reason_when_it_cannot_run():
    table = backend_table("cpu", torch.float32)
    assert list(table["backend"]) == backend_names()
    runs = table["runs here (cpu, float32)"]
    assert set(runs) <= {"yes", "forward only", "no"}
    assert (table["why not"][runs != "yes"].str.len() > 10).all()
    by_name = table.set_index("backend")
    for name in ("flex-longformer", "flex-bigbird"):  # compiled FlexAttention on CPU: no backward
        assert by_name.loc[name, "runs here (cpu, float32)"] == "forward only"
        assert "no backward" in by_name.loc[name, "why not"]
    assert "n_hashes 4 > 1" in by_name.loc["flex-reformer", "why not"]  # one round only on CPU
    assert (table["why not"][runs == "yes"] == "").all()
    assert runs[table["backend"] == "full-sdpa"].tolist() == ["yes"]


def test_a_fake_cuda_only_backend_says_why(fake_backends):
    table = backend_table("cpu", torch.float32).set_index("backend")
    assert table.loc["test-cuda-only", "runs here (cpu, float32)"] == "no"
    assert "device cpu not supported" in table.loc["test-cuda-only", "why not"]


def test_the_listing_fits_120_columns_and_names_the_shapes_each_backend_computes():
    from harness.cli.listing import format_json, format_table, supported_axes

    table = backend_table("cpu", torch.float32)
    text = format_table(table)
    assert max(len(line) for line in text.splitlines()) <= 120
    for name in backend_names():  # nothing cut: every backend and reason is there
        assert name in text
    shapes = table.set_index("backend")["shapes"]
    assert "docs" in shapes["full-sdpa"] and "decode" in shapes["longformer"]
    assert shapes["bigbird"] == "gqa"  # no causal variant, no decoding, no documents
    import json

    listed = {b["backend"]: b for b in json.loads(format_json(table, "cpu", torch.float32))}
    for name in backend_names():
        from harness.measure.registry import get_backend_class

        axes = supported_axes(get_backend_class(name))
        assert {k: listed[name][f"supports_{k}"] for k in axes} == axes
    assert listed["longformer"]["implementation"] == "ours"
    assert listed["hf-longformer"]["implementation"] == "transformers"
