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
