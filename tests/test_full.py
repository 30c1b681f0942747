"""Full attention backends against the dense reference, with and without the causal mask."""

from __future__ import annotations

import pytest

from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from tests.backend_checks import assert_matches_reference, largest_intermediate


@pytest.mark.parametrize("name", ["full-naive", "full-sdpa"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_len", [1, 37, 128])
def test_matches_reference(name, causal, seq_len):
    cls = get_backend_class(name)
    mask = assert_matches_reference(cls(cls.Params(causal=causal)), Inputs(2, 3, seq_len, 16))
    assert mask.sum().item() == 2 * 3 * (seq_len * (seq_len + 1) // 2 if causal else seq_len**2)


def test_naive_materialises_the_score_matrix_and_its_estimate_says_so():
    backend = get_backend_class("full-naive")()
    inputs = Inputs(1, 2, 256, 16, requires_grad=True)
    assert largest_intermediate(backend, inputs) >= 2 * 256 * 256
    matrix, vector = 2 * 256 * 256 * 4, 2 * 256 * 16 * 4  # [B, H, N, N], [B, H, N, D] float32
    # backward: the saved softmax, its gradient and the scores' gradient, beside output and dv
    assert backend.estimate_bytes(inputs) == 3 * matrix + 2 * vector
    # forward: the scores and their softmax, and the output
    assert backend.estimate_bytes(Inputs(1, 2, 256, 16)) == 2 * matrix + vector
