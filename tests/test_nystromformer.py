"""Nystromformer: output and gradients against the dense formula with the same landmarks and
iteration; the landmarks and their padding; the iterative pseudo-inverse; exactness with a
landmark per token; memory; FLOPs; refusals."""

from __future__ import annotations

import pytest
import torch

from attention_impls.nystromformer import (
    NO_CAUSAL,
    Nystromformer,
    NystromformerParams,
    iterative_pinv,
    nystrom_flops,
    segment_means,
    segments,
)
from harness.measure.inputs import Inputs
from harness.measure.reference import masked_attention
from tests.backend_checks import assert_matches_reference, largest_intermediate


def make(landmarks: int = 8, iterations: int = 6) -> Nystromformer:
    return Nystromformer(NystromformerParams(landmarks, iterations))


def shape(n: int, seed: int, **kw) -> Inputs:
    """float64, so that the comparison with the reference is to rounding."""
    return Inputs(**{"batch": 2, "heads": 4, "seq_len": n, "head_dim": 8,
                     "dtype": torch.float64, "seed": seed, **kw})  # fmt: skip


# (n, landmarks): one token; m dividing N; front padding of 3 in segments of 5; N = 100 with
# m = 64 (segments of 2, 50 landmarks); a landmark per token; a single landmark
CASES = [(1, 1), (64, 8), (37, 8), (100, 64), (20, 20), (57, 1), (257, 16)]


@pytest.mark.parametrize(("n", "landmarks"), CASES)
@pytest.mark.parametrize("kv_heads", [None, 2, 1])
def test_matches_reference(n, landmarks, kv_heads):
    inputs = shape(n, n + landmarks, kv_heads=kv_heads)
    assert make(landmarks).not_supported_reasons(inputs) == []
    assert_matches_reference(make(landmarks), inputs, 1e-9, 1e-9)


def test_float32_matches_reference():
    inputs = Inputs(1, 4, 300, 32, kv_heads=2, seed=5)
    assert_matches_reference(make(64), inputs)


def test_float32_error_against_float64_is_within_the_sweep_tolerance():
    """The sweep's check (float64 reference, 1e-4 in float32) at its default inputs."""
    backend = make(64)
    inputs = Inputs(1, 2, 1000, 64, seed=3)
    q, k, v = inputs.make_qkv()
    out = backend.prepare(inputs)(q, k, v).double()
    rows = torch.arange(1000)
    assert (out - backend.reference(inputs, q, k, v, rows)).abs().max() < 1e-6


def test_segments_and_their_means():
    assert segments(64, 8) == (8, 8, 0)
    assert segments(37, 8) == (5, 8, 3)  # the first segment holds 2 tokens
    assert segments(100, 64) == (2, 50, 0)  # 50 landmarks, not 64 of which 14 are padding
    assert segments(10, 3) == (4, 3, 2)
    x = torch.arange(37.0)[:, None].expand(37, 2)
    means = segment_means(x, 8)  # [8, 2]
    expected = torch.tensor([0.5] + [2 + 5 * i + 2 for i in range(7)])
    torch.testing.assert_close(means[:, 0], expected)
    assert means.shape == (8, 2)


def test_iterative_pinv_converges_to_the_pseudo_inverse():
    gen = torch.Generator().manual_seed(0)
    eye = torch.eye(16, dtype=torch.float64)
    # softmax matrices of condition numbers 18 to 66
    a = (torch.randn(3, 16, 16, generator=gen, dtype=torch.float64) + 3 * eye).softmax(dim=-1)
    exact = torch.linalg.pinv(a)
    errors = [(iterative_pinv(a, it) - exact).abs().max().item() for it in (2, 6, 10, 30)]
    assert errors[0] > errors[1] > errors[2] > errors[3] and errors[3] < 1e-10
    # each matrix scaled by its own norms: a matrix's result does not depend on the others
    torch.testing.assert_close(iterative_pinv(a[:1], 6), iterative_pinv(a, 6)[:1])


def test_a_landmark_per_token_is_exact_attention_up_to_the_iteration():
    inputs = shape(48, 7, batch=1)
    q, k, v = inputs.make_qkv()
    full = masked_attention(q, k, v)
    errors = []
    for iterations in (6, 12, 30):
        out = make(48, iterations).prepare(inputs)(q, k, v)
        errors.append((out - full).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] > 1e-4  # six iterations are not the exact inverse here ...
    assert errors[2] < 1e-10  # ... many are


def test_batch_independence():
    inputs = shape(40, 2)
    q, k, v = inputs.make_qkv()
    one = Inputs(**{**inputs.__dict__, "batch": 1})
    out = make(8).prepare(inputs)(q, k, v)
    torch.testing.assert_close(make(8).prepare(one)(q[:1], k[:1], v[:1]), out[:1])


def test_no_n_by_n_tensor():
    n, m = 2048, 64
    inputs = Inputs(1, 2, n, 16, requires_grad=True, seed=2)
    largest = largest_intermediate(make(m), inputs)
    assert largest <= 2 * n * m < n * n // 8  # F or B: [B, H, N, m]


def test_forward_flops_by_hand():
    inputs = Inputs(2, 4, 10, 8)
    # m = 3 landmarks of 4 (the first holds 2): per head 8 N m D + 4 m^2 D + 8 it m^3
    per_head = 8 * 10 * 3 * 8 + 4 * 9 * 8 + 8 * 6 * 27
    assert nystrom_flops(inputs, 3, 6) == 2 * 4 * per_head == 28032
    assert make(3).forward_flops(inputs) == 28032


def test_reasons():
    backend = make(8)
    causal = backend.not_supported_reasons(shape(64, 0, causal=True))
    assert causal == [NO_CAUSAL]
    (decoding,) = backend.not_supported_reasons(shape(64, 0, q_len=4))
    assert "q_len 4" in decoding and "means over all N queries" in decoding
    (documents,) = backend.not_supported_reasons(shape(64, 0, documents=2))
    assert "2 documents" in documents and "straddle" in documents
    assert backend.not_supported_reasons(shape(64, 0, kv_heads=1)) == []
    assert make(65).param_errors(64) == ["landmarks 65 exceed the sequence length 64"]
    assert make(8, 0).param_errors(64) == ["pinv_iterations must be >= 1, got 0"]
    assert make(0).param_errors(64) == ["landmarks must be >= 1, got 0"]
