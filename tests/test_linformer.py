"""Linformer (Wang et al., 2020): output and gradients against the dense formula with the same
projections, the projections' draw, the formula with identity projections (exact attention),
FLOPs by hand, the shapes it refuses, memory."""

from __future__ import annotations

import pytest
import torch

import attention_impls.linformer as lf
from attention_impls.linformer import Linformer, LinformerParams, projections
from harness.measure.inputs import Inputs
from harness.measure.reference import masked_attention
from harness.measure.registry import get_backend_class
from tests.backend_checks import assert_matches_reference, largest_intermediate
from tests.test_memory_estimates import assert_within, ratios, sweep


def make(proj_len: int | None = None) -> Linformer:
    return Linformer(LinformerParams(proj_len))


# (n, k): tiny lengths, k = 1, k = N, and lengths that no k divides
CASES = [(1, None), (2, None), (2, 1), (7, 3), (7, 7), (100, None), (100, 16), (257, 64),
         (300, None)]  # fmt: skip


@pytest.mark.parametrize(("n", "k"), CASES)
def test_matches_reference(n, k):
    assert_matches_reference(make(k), Inputs(2, 3, n, 16, seed=n))


@pytest.mark.parametrize(("n", "k"), CASES)
def test_matches_reference_float64(n, k):
    inputs = Inputs(2, 3, n, 8, dtype=torch.float64, seed=n + 1)
    assert_matches_reference(make(k), inputs, 1e-10, 1e-10)


@pytest.mark.parametrize(("kv_heads", "q_len"), [(1, None), (2, None), (None, 1), (2, 5), (1, 37)])
def test_grouped_heads_and_decoding(kv_heads, q_len):
    backend = make(24)
    inputs = Inputs(2, 4, 100, 8, dtype=torch.float64, seed=3, kv_heads=kv_heads, q_len=q_len)
    assert backend.not_supported_reasons(inputs) == []
    assert_matches_reference(backend, inputs, 1e-10, 1e-10)


def test_decoding_is_the_last_rows_of_the_whole():
    # the projections cover all N keys whatever the queries: a query's row does not depend on
    # which other queries are computed
    whole, last = Inputs(1, 2, 64, 8, seed=5), Inputs(1, 2, 64, 8, seed=5, q_len=10)
    q, k, v = whole.make_qkv()
    backend = make(16)
    out = backend.prepare(whole)(q, k, v)
    torch.testing.assert_close(backend.prepare(last)(q[:, :, -10:], k, v), out[:, :, -10:])


def test_identity_projections_are_exact_attention(monkeypatch):
    """With E = F = I (k = N) the formula is softmax(Q K^T / sqrt(D)) V: the kernel applies E
    and F along the sequence, to the keys and to the values respectively."""
    inputs = Inputs(2, 2, 50, 8, dtype=torch.float64, seed=2)
    eye = torch.eye(50, dtype=torch.float64)
    monkeypatch.setattr(lf, "projections", lambda inputs, params: (eye, eye))
    q, k, v = inputs.make_qkv()
    out = make(50).prepare(inputs)(q, k, v)
    torch.testing.assert_close(out, masked_attention(q, k, v), atol=1e-12, rtol=1e-12)


def test_swapped_projections_differ():
    # E projects the keys and F the values: exchanging them changes the output
    inputs = Inputs(1, 2, 40, 8, dtype=torch.float64)
    q, k, v = inputs.make_qkv()
    e, f = projections(inputs, LinformerParams(8))
    scores = (q @ (e @ k).transpose(-1, -2) * inputs.scale).softmax(-1)
    swapped = (q @ (f @ k).transpose(-1, -2) * inputs.scale).softmax(-1) @ (e @ v)
    out = make(8).prepare(inputs)(q, k, v)
    torch.testing.assert_close(out, scores @ (f @ v))
    assert (out - swapped).abs().max() > 1e-3


def test_projections_are_seeded():
    a, b = (projections(Inputs(1, 1, 300, 8, seed=s), LinformerParams()) for s in (0, 0))
    c = projections(Inputs(1, 1, 300, 8, seed=1), LinformerParams())
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    assert not torch.equal(a[0], a[1])  # headwise sharing: E and F are distinct
    assert a[0].shape == (256, 300)  # k = min(256, N)
    # the same output for the same seed, another for another
    backend = make()
    outs = []
    for seed in (0, 0, 1):
        inputs = Inputs(1, 2, 300, 8, seed=seed)
        q, k, v = Inputs(1, 2, 300, 8, seed=9).make_qkv()  # the same q, k, v each time
        outs.append(backend.prepare(inputs)(q, k, v))
    assert torch.equal(outs[0], outs[1]) and (outs[0] - outs[2]).abs().max() > 1e-3


def test_projection_distribution():
    """The official code's Xavier uniform, gain 1/sqrt(2): uniform on ±sqrt(3 / (N + k)),
    variance 1 / (N + k); E and F independent; the same on every dtype (rounded)."""
    n, k = 4000, 256
    e, f = projections(Inputs(1, 1, n, 8, dtype=torch.float64), LinformerParams(k))
    bound = (3 / (n + k)) ** 0.5
    assert e.abs().max() <= bound and e.abs().max() > 0.999 * bound
    assert abs(e.var().item() * (n + k) - 1) < 0.01
    assert abs(e.mean().item()) < 5e-3 * bound  # 8 standard errors of the mean
    assert abs(torch.corrcoef(torch.stack([e.flatten(), f.flatten()]))[0, 1]) < 0.01
    e32, _ = projections(Inputs(1, 1, n, 8), LinformerParams(k))
    assert torch.equal(e32, e.float())


def test_no_quadratic_intermediate():
    n = 2048
    inputs = Inputs(1, 2, n, 16, requires_grad=True)
    largest = largest_intermediate(make(), inputs)
    assert 0 < largest <= 2 * n * 256  # the [B, H, N, k] scores, never [N, N]


def test_forward_flops_by_hand():
    # B 2, H 4, Hkv 2, N 10, D 8, k 3: E K and F V 2 * (2 k N D) = 960 per (batch, kv head),
    # Q (E K)^T and P (F V) 2 * (2 M k D) = 960 per (batch, query head)
    backend = make(3)
    assert backend.forward_flops(Inputs(2, 4, 10, 8, kv_heads=2)) == 960 * 4 + 960 * 8
    # decoding 4 queries: 2 * (2 * 4 * 3 * 8) = 384 per (batch, query head)
    assert backend.forward_flops(Inputs(2, 4, 10, 8, kv_heads=2, q_len=4)) == 960 * 4 + 384 * 8
    facts = backend.row_facts(Inputs(2, 4, 10, 8, kv_heads=2), "fwdbwd")
    assert facts["flops"] == 3.5 * (960 * 4 + 960 * 8) and facts["promise"] == "O(n)"
    assert not facts["sparse"] and not facts["yardstick"]


def test_refusals_have_reasons():
    backend = make()
    causal = backend.not_supported_reasons(Inputs(1, 2, 64, 8, causal=True))
    assert causal == [
        "linformer has no causal variant: each projected row of E K mixes every position, "
        "future ones included"
    ]
    docs = backend.not_supported_reasons(Inputs(1, 2, 64, 8, documents=3))
    assert len(docs) == 1 and "3 documents" in docs[0] and "every document" in docs[0]
    assert backend.not_supported_reasons(Inputs(1, 4, 64, 8, kv_heads=2, q_len=3)) == []


@pytest.mark.parametrize(
    ("k", "n", "errors"),
    [
        (None, 1, []),
        (64, 64, []),
        (65, 64, ["proj_len 65 exceeds the length 64: projecting up saves nothing"]),
        (0, 64, ["proj_len 0 must be at least 1"]),
    ],
)
def test_param_errors(k, n, errors):
    assert make(k).param_errors(n) == errors


def test_registered():
    cls = get_backend_class("linformer")
    assert cls is Linformer and cls.family == "linformer" and not cls.is_sparse
    assert make(128).label() == "linformer(proj_len=128)" and make().label() == "linformer"


def test_estimates_are_within_a_quarter_of_the_measured_peak(tmp_path):
    assert_within(ratios(sweep(tmp_path, ("linformer",))))
