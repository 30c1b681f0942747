"""Linear attention (Katharopoulos et al., 2020): output and gradients against the dense
formula on every shape (causal, grouped heads, decoding, packed documents), the paper's RNN
form, what the chunking must not change, FLOPs by hand, half precision, memory."""

from __future__ import annotations

import pytest
import torch

from attention_impls.linear import LinearAttention, LinearAttentionParams, phi
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from tests.backend_checks import assert_matches_reference, largest_intermediate
from tests.test_memory_estimates import assert_within, ratios, sweep


def make(chunk: int = 64, causal: bool = False) -> LinearAttention:
    return LinearAttention(LinearAttentionParams(chunk, causal))


def shape(n: int, seed: int, **kw) -> Inputs:
    """8 query heads; float64 so that the reference comparison is tight."""
    return Inputs(2, 8, n, 8, dtype=torch.float64, seed=seed, **kw)


# lengths 1 and 2, lengths no chunk divides, chunks of 1 and longer than the sequence
CASES = [(n, c) for n in (1, 2, 7, 64, 100, 257) for c in (1, 5, 16, 300)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "chunk"), CASES)
def test_matches_reference(n, chunk, causal):
    assert_matches_reference(make(chunk, causal), Inputs(2, 3, n, 16, seed=n, causal=causal))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "chunk"), [(64, 16), (100, 7), (257, 64)])
@pytest.mark.parametrize(("kv_heads", "documents"), [(2, 1), (None, 4), (2, 5), (1, 3)])
def test_grouped_heads_and_documents(n, chunk, causal, kv_heads, documents):
    backend = make(chunk, causal)
    inputs = shape(n, n + documents, kv_heads=kv_heads, documents=documents, causal=causal)
    assert backend.not_supported_reasons(inputs) == []
    assert_matches_reference(backend, inputs, 1e-9, 1e-9)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "q_len"), [(100, 1), (100, 3), (100, 40), (257, 100), (64, 64)])
@pytest.mark.parametrize(("kv_heads", "documents"), [(None, 1), (2, 1), (2, 4)])
def test_decoding(n, q_len, causal, kv_heads, documents):
    backend = make(16, causal)
    inputs = shape(n, q_len, q_len=q_len, kv_heads=kv_heads, documents=documents, causal=causal)
    assert backend.not_supported_reasons(inputs) == []
    assert_matches_reference(backend, inputs, 1e-9, 1e-9)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "documents", "chunk"), [(60, 30, 4), (40, 40, 3), (200, 9, 64)])
def test_many_documents(n, documents, chunk, causal):
    # documents shorter than a chunk, of length 1, restarting the sums at most blocks
    inputs = shape(n, documents, documents=documents, causal=causal, kv_heads=4)
    assert_matches_reference(make(chunk, causal), inputs, 1e-9, 1e-9)


def recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The paper's RNN (section 3.4, eq. 18-20), one position at a time: ``s_i = s_{i-1} +
    phi(k_i) v_i^T``, ``z_i = z_{i-1} + phi(k_i)``, ``out_i = phi(q_i)^T s_i / phi(q_i)^T z_i``."""
    b, h, n, d = q.shape
    s, z, out = q.new_zeros(b, h, d, d), q.new_zeros(b, h, d), []
    for i in range(n):
        pk, pq = phi(k[:, :, i]), phi(q[:, :, i])  # [B, H, D]
        s = s + pk[..., :, None] * v[:, :, i, None, :]
        z = z + pk
        out.append((pq[..., None, :] @ s)[..., 0, :] / (pq * z).sum(-1, keepdim=True))
    return torch.stack(out, dim=2)


@pytest.mark.parametrize(("n", "chunk"), [(1, 4), (37, 1), (37, 8), (64, 16), (90, 200)])
def test_causal_is_the_papers_rnn(n, chunk):
    inputs = Inputs(2, 3, n, 8, dtype=torch.float64, seed=n, causal=True)
    q, k, v = inputs.make_qkv()
    out = make(chunk, causal=True).prepare(inputs)(q, k, v)
    torch.testing.assert_close(out, recurrent(q, k, v), atol=1e-12, rtol=1e-10)


def test_not_causal_sums_every_key():
    # eq. 5 written out: one state for all queries
    inputs = Inputs(2, 3, 50, 8, dtype=torch.float64, seed=1)
    q, k, v = inputs.make_qkv()
    s, z = phi(k).transpose(-1, -2) @ v, phi(k).sum(dim=2)  # [B, H, D, D], [B, H, D]
    expected = (phi(q) @ s) / (phi(q) @ z[..., None])
    torch.testing.assert_close(make().prepare(inputs)(q, k, v), expected)


@pytest.mark.parametrize("documents", [1, 3])
def test_causal_rows_ignore_the_future(documents):
    inputs = Inputs(1, 2, 120, 8, seed=4, causal=True, documents=documents)
    q, k, v = inputs.make_qkv()
    fn = make(16, causal=True).prepare(inputs)
    out = fn(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 71:] += 1.0
    v2[:, :, 71:] -= 1.0
    changed = fn(q, k2, v2)
    assert torch.equal(out[:, :, :71], changed[:, :, :71])
    assert (out[:, :, 71:] - changed[:, :, 71:]).abs().amax(dim=(0, 1, 3)).min() > 1e-4


@pytest.mark.parametrize("causal", [False, True])
def test_documents_do_not_see_each_other(causal):
    inputs = Inputs(1, 2, 150, 8, seed=6, documents=4, causal=causal)
    doc = inputs.document_ids()
    q, k, v = inputs.make_qkv()
    fn = make(16, causal).prepare(inputs)
    out = fn(q, k, v)
    other = doc != doc[75]
    k2, v2 = k.clone(), v.clone()
    k2[:, :, other] *= 2.0
    v2[:, :, other] += 1.0
    changed = fn(q, k2, v2)
    assert torch.equal(out[:, :, doc == doc[75]], changed[:, :, doc == doc[75]])
    assert (out[:, :, other] - changed[:, :, other]).abs().max() > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_chunk_size_does_not_change_the_result(causal):
    inputs = Inputs(1, 4, 200, 16, seed=2, documents=3, kv_heads=2, causal=causal)
    q, k, v = inputs.make_qkv()
    outs = [make(c, causal).prepare(inputs)(q, k, v) for c in (1, 7, 64, 200)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "kw",
    [{}, {"causal": True}, {"causal": True, "documents": 8}, {"documents": 8},
     {"q_len": 300, "causal": True, "documents": 4}],
)  # fmt: skip
def test_no_quadratic_intermediate(kw):
    n = 2048
    backend = make(64, kw.get("causal", False))
    largest = largest_intermediate(backend, Inputs(1, 2, n, 16, requires_grad=True, **kw))
    # [B, H, N, D+1] rows, [B, H, nb, c, c] scores, [B, H, nb, D, D+1] states: never N x N
    assert 0 < largest <= 2 * n * 64


def test_forward_flops_by_hand():
    # B 2, H 4, Hkv 2, N 10, D 8: each key 2 D (D + 1) = 144 per (batch, kv head), each query
    # 144 per (batch, query head); causal or not, the RNN form does the same products
    inputs = Inputs(2, 4, 10, 8, kv_heads=2)
    for causal in (False, True):
        assert make(4, causal).forward_flops(inputs) == 144 * 10 * 4 + 144 * 10 * 8
    decode = Inputs(2, 4, 10, 8, kv_heads=2, q_len=3)
    assert make().forward_flops(decode) == 144 * 10 * 4 + 144 * 3 * 8
    facts = make().row_facts(inputs, "bwd")
    assert facts["flops"] == 2.5 * (144 * 10 * 4 + 144 * 10 * 8) and facts["promise"] == "O(n)"


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 2e-2), (torch.bfloat16, 6e-2)])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_sums_in_float32(dtype, tol, causal):
    # phi(q)^T z grows as N D: 4096 keys of head dim 64 overflow float16 sums (65504)
    inputs = Inputs(1, 2, 4096, 64, dtype=dtype, seed=1, causal=causal)
    q, k, v = inputs.make_qkv()
    rows = torch.tensor([0, 1, 2000, 4095])
    out = make(64, causal).prepare(inputs)(q, k, v)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = make(64, causal).reference(inputs, q, k, v, rows)  # float64
    assert (out[:, :, rows].double() - ref).abs().max() < tol


def test_refuses_only_other_dtypes_and_devices():
    backend = make(causal=True)
    shapes = Inputs(1, 4, 64, 8, kv_heads=2, q_len=5, documents=3, causal=True)
    assert backend.not_supported_reasons(shapes) == []
    assert "dtype int32" in backend.not_supported_reasons(Inputs(1, 1, 8, 4, dtype=torch.int32))[0]


def test_param_errors_and_registration():
    assert make(0).param_errors(64) == ["query_chunk 0 must be at least 1"]
    assert make(1000).param_errors(64) == []  # a chunk longer than the queries is one block
    cls = get_backend_class("linear-attention")
    assert cls is LinearAttention and cls.family == "linear" and not cls.is_sparse
    assert make(32, causal=True).label() == "linear-attention(query_chunk=32, causal)"


@pytest.mark.parametrize("causal", [(False,), (True,)])
def test_estimates_are_within_a_quarter_of_the_measured_peak(tmp_path, causal):
    assert_within(ratios(sweep(tmp_path, ("linear-attention",), causal=causal)))
