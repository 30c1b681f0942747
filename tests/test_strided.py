"""The Sparse Transformer's strided family: its dense mask against the paper's definition, the
plain and the Flex backend against that mask (outputs and gradients), the pair count, sparsity."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

import attention_impls.flex as fx
from attention_impls.strided import FlexStrided, Strided, StridedParams, stride_at
from harness.measure.inputs import Inputs
from harness.store.records import Status
from tests.backend_checks import assert_matches_reference, largest_intermediate

CASES = [(n, s, c) for n in (1, 2, 7, 64, 100, 257) for s in (None, 1, 5) for c in (False, True)]


def definition(n: int, stride: int, causal: bool) -> torch.Tensor:
    """Section 4.2 written out pair by pair: A(1) = {t..i}, t = max(0, i - l) (mirrored when
    not causal), A(2) = {j : (i - j) mod l = 0}."""
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if causal and j > i:
                continue
            mask[i, j] = abs(i - j) <= stride or (i - j) % stride == 0
    return mask


@pytest.mark.parametrize(("n", "stride", "causal"), CASES)
def test_mask_is_the_definition_and_pairs_count_it(n, stride, causal):
    backend = Strided(StridedParams(stride, causal))
    inputs = Inputs(1, 1, n, 8, seed=n)
    q, k, _ = inputs.make_qkv()
    mask = backend.mask(inputs, q, k)[0, 0]
    assert torch.equal(mask, definition(n, stride_at(backend.params, n), causal))
    assert backend.attended_pairs(n) == mask.sum().item()


@pytest.mark.parametrize(("n", "stride", "causal"), CASES)
def test_plain_matches_reference(n, stride, causal):
    assert_matches_reference(Strided(StridedParams(stride, causal)), Inputs(2, 3, n, 16, seed=7))


def test_default_stride_is_ceil_sqrt():
    assert [stride_at(StridedParams(), n) for n in (1, 2, 4, 5, 1024, 1025)] == [1, 2, 2, 3, 32, 33]


def test_no_quadratic_intermediate():
    n = 1024  # stride 32: scores N x (3l + N / l) = N x 128
    largest = largest_intermediate(Strided(), Inputs(1, 1, n, 16, requires_grad=True))
    assert 0 < largest < n * n // 4


@pytest.fixture
def eager_flex(monkeypatch):
    """Uncompiled flex_attention in place of the compiled one: no compilation, float64."""
    monkeypatch.setattr(fx, "compiled_flex", lambda: flex_attention)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(without torch.compile|deprecated).*")
        yield


@pytest.mark.parametrize(("n", "stride", "causal"), [(64, None, False), (200, 5, True)])
def test_flex_matches_reference(eager_flex, n, stride, causal):
    # FlexAttention has no backward on the CPU: gradients are checked on CUDA (below)
    inputs = Inputs(1, 2, n, 16, dtype=torch.float64)
    assert_matches_reference(FlexStrided(StridedParams(stride, causal)), inputs, grads=False)


@pytest.mark.cuda
@pytest.mark.parametrize("causal", [False, True])
def test_flex_matches_reference_cuda(causal):
    inputs = Inputs(1, 2, 1000, 64, device="cuda", seed=5)
    assert_matches_reference(FlexStrided(StridedParams(causal=causal)), inputs, 2e-5, 2e-5)


def test_flex_compiled_forward():
    # the suite compiles many Flex shapes in one process; dynamo gives up after 8 per function
    with torch._dynamo.config.patch(recompile_limit=64):
        _compiled_forward()


def _compiled_forward():
    backend = FlexStrided(StridedParams(causal=True))
    inputs = Inputs(1, 2, 300, 16, seed=3)
    if backend.not_supported_reasons(inputs):
        pytest.skip("; ".join(backend.not_supported_reasons(inputs)))
    assert_matches_reference(backend, inputs, grads=False)


def test_flex_holds_the_pattern():
    flex = FlexStrided(StridedParams(stride=4))
    assert isinstance(flex.plain, Strided) and flex.plain.params == flex.params
    assert (flex.family, flex.promise, flex.is_sparse) == ("strided", Strided.promise, True)
    assert flex.attended_pairs(100) == flex.plain.attended_pairs(100)
    assert Strided(StridedParams(stride=0)).param_errors(64) == ["stride 0 must be at least 1"]


def test_the_command_line_sets_the_stride(tmp_path: Path):
    """--stride comes from StridedParams' declaration; a stride longer than a length is refused."""
    root = Path(__file__).resolve().parent.parent
    quick = [
        "--backends",
        "strided",
        "--lengths",
        "64",
        "100",
        "--passes",
        "fwd",
        "--device",
        "cpu",
        "--heads",
        "2",
        "--head-dim",
        "16",
        "--min-time",
        "0.02",
        "--warmup",
        "0.01",
    ]
    run = [sys.executable, "run_bench.py", *quick]
    done = subprocess.run([*run, "--stride", "8", "--causal", "--out", str(tmp_path / "run")],
                          cwd=root, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert [json.loads(p) for p in df.params] == [{"causal": True, "stride": 8}] * 2
    assert (df.status == Status.OK).all() and (df.max_err < 1e-4).all()
    refused = subprocess.run([*run, "--stride", "80"], cwd=root, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert refused.returncode == 2
    # the backend is named by its label (``strided(stride=80)``) or its name
    assert "at length 64: stride 80 is longer than the length 64" in refused.stderr
    assert "strided" in refused.stderr
