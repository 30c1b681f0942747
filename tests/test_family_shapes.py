"""The plain sparse families on today's shapes (``harness.measure.inputs``): grouped-query
attention, decoding with a KV cache, packed documents, causal. Each declared support is checked
against the dense reference (``reference_mask``: the family's pattern at the queries' positions,
within their documents), with gradients; each undeclared one must be refused with a reason."""

from __future__ import annotations

import pytest
import torch

from attention_impls.bigbird import BigBird, BigBirdParams
from attention_impls.longformer import Longformer, LongformerParams
from attention_impls.reformer import Reformer, ReformerParams
from attention_impls.strided import Strided, StridedParams
from harness.measure.backend import AttentionBackend
from harness.measure.inputs import Inputs
from tests.backend_checks import assert_matches_reference, largest_intermediate

# backend -> (gqa, decoding, documents), as declared
SUPPORTS = {
    Longformer: (True, True, True),
    Strided: (True, False, True),
    BigBird: (True, False, False),
    Reformer: (True, False, False),
}


def shape(n: int, seed: int, **kw) -> Inputs:
    """8 query heads; float64 so that the reference comparison is tight."""
    return Inputs(2, 8, n, 8, dtype=torch.float64, seed=seed, **kw)


def check(backend: AttentionBackend, inputs: Inputs) -> torch.Tensor:
    assert backend.not_supported_reasons(inputs) == []
    return assert_matches_reference(backend, inputs, atol=1e-9, rtol=1e-9)


def test_declarations_are_data():
    for cls, (gqa, decoding, documents) in SUPPORTS.items():
        assert (cls.supports_gqa, cls.supports_decoding, cls.supports_documents) == (
            gqa,
            decoding,
            documents,
        ), cls.name


# (n, window, dilation, global_tokens): lengths not multiples of the blocks, so padded slots
# meet the document masks; a global token that may fall in any document.
LONGFORMER = [
    (128, 8, 1, ()),
    (200, 12, 1, (0, 77, -1)),
    (157, 6, 3, (5, -2)),
]


@pytest.mark.parametrize(("n", "window", "dilation", "global_tokens"), LONGFORMER)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("kv_heads", "documents"), [(2, 1), (None, 4), (2, 4), (1, 3)])
def test_longformer_gqa_and_documents(
    n, window, dilation, global_tokens, causal, kv_heads, documents
):
    backend = Longformer(LongformerParams(window, dilation, global_tokens, causal))
    seed = n + 10 * documents + (kv_heads or 0)
    mask = check(backend, shape(n, seed, kv_heads=kv_heads, documents=documents, causal=causal))
    if documents > 1:  # the documents really cut the pattern: fewer pairs than without them
        plain = backend.mask(shape(n, seed), torch.empty(0), torch.empty(0))
        assert mask[0, 0].sum() < plain[0, 0].sum()


@pytest.mark.parametrize(("n", "window", "dilation", "global_tokens"), LONGFORMER)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("q_len", "kv_heads", "documents"), [(1, 2, 1), (9, None, 3), (40, 2, 4)])
def test_longformer_decoding(
    n, window, dilation, global_tokens, causal, q_len, kv_heads, documents
):
    backend = Longformer(LongformerParams(window, dilation, global_tokens, causal))
    inputs = shape(n, n + q_len, q_len=q_len, kv_heads=kv_heads, documents=documents, causal=causal)
    mask = check(backend, inputs)
    assert mask.shape[-2:] == (q_len, n)


def test_longformer_decoding_global_query():
    # the last position is global: its row attends every key of its document
    backend = Longformer(LongformerParams(window=4, global_tokens=(-1, 3)))
    mask = check(backend, shape(96, 5, q_len=6, kv_heads=4, documents=2))
    doc = shape(96, 5, documents=2).document_ids()
    assert torch.equal(mask[0, 0, -1], doc == doc[-1])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "stride"), [(130, None), (96, 7)])
@pytest.mark.parametrize(("kv_heads", "documents"), [(2, 1), (None, 4), (1, 3)])
def test_strided_gqa_and_documents(causal, n, stride, kv_heads, documents):
    backend = Strided(StridedParams(stride=stride, causal=causal))
    check(backend, shape(n, n + documents, kv_heads=kv_heads, documents=documents, causal=causal))


@pytest.mark.parametrize(("n", "b", "g", "r"), [(200, 16, 1, 2), (256, 32, 0, 3), (64, 16, 2, 1)])
@pytest.mark.parametrize("kv_heads", [1, 2])
@pytest.mark.parametrize("shared", [False, True])
def test_bigbird_gqa(n, b, g, r, kv_heads, shared):
    backend = BigBird(BigBirdParams(b, g, r, shared_plan=shared))
    check(backend, shape(n, n + kv_heads, kv_heads=kv_heads))


@pytest.mark.parametrize(("n", "rounds"), [(150, 1), (256, 3)])
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_reformer_gqa_without_shared_qk(n, rounds, kv_heads):
    backend = Reformer(ReformerParams(n_hashes=rounds, chunk_size=16, shared_qk=False))
    check(backend, shape(n, n + kv_heads, kv_heads=kv_heads))


def test_longformer_documents_stay_sparse():
    n = 1024
    backend = Longformer(LongformerParams(window=16, global_tokens=(0, 600)))
    inputs = Inputs(1, 4, n, 16, kv_heads=2, documents=4, requires_grad=True, seed=3)
    assert 0 < largest_intermediate(backend, inputs) < n * n // 4


def test_longformer_decoding_stays_sparse():
    # the bands of the M queries, never an M x N score matrix (the global rows' only)
    n, m = 1024, 64
    backend = Longformer(LongformerParams(window=16, global_tokens=(0, -1), causal=True))
    inputs = Inputs(1, 4, n, 8, kv_heads=2, q_len=m, documents=4, requires_grad=True, causal=True)
    assert 0 < largest_intermediate(backend, inputs) < m * n // 2


def test_strided_documents_stay_sparse():
    n = 1024
    inputs = Inputs(1, 4, n, 16, kv_heads=2, documents=4, requires_grad=True, seed=1)
    # O(N^1.5): per query head, N rows of 3 sqrt(N) window and sqrt(N) class scores
    assert 0 < largest_intermediate(Strided(), inputs) < inputs.heads * n * n // 4


def test_estimates_count_grouped_heads():
    mha, gqa = Inputs(2, 8, 4096, 64), Inputs(2, 8, 4096, 64, kv_heads=2)
    # blocked kernels copy k and v neighbours per key/value head: fewer heads, less memory
    shared_plan = BigBird(BigBirdParams(shared_plan=True))
    for backend in (Longformer(LongformerParams(window=64)), shared_plan, Strided()):
        assert backend.estimate_bytes(gqa) < backend.estimate_bytes(mha), backend.name
    # BigBird's random plan per head gathers the blocks per query head: no saving
    assert BigBird().estimate_bytes(gqa) == BigBird().estimate_bytes(mha)
    # Reformer repeats k and v to every query head: more memory than without the groups
    reformer = Reformer(ReformerParams(shared_qk=False))
    assert reformer.estimate_bytes(gqa) > reformer.estimate_bytes(mha)
    # decoding a few tokens holds a few bands, not the key slots of all N rows
    longformer = Longformer(LongformerParams(window=64))
    decode = Inputs(2, 8, 4096, 64, kv_heads=2, q_len=16)
    assert longformer.estimate_bytes(decode) < longformer.estimate_bytes(gqa) // 10


@pytest.mark.parametrize("cls", list(SUPPORTS))
def test_undeclared_axes_are_refused(cls):
    _, decoding, documents = SUPPORTS[cls]
    backend = cls(cls.Params(shared_qk=False)) if cls is Reformer else cls()
    reasons = backend.not_supported_reasons(Inputs(1, 4, 256, 8, q_len=7))
    assert any("q_len 7" in r for r in reasons) != decoding
    reasons = backend.not_supported_reasons(Inputs(1, 4, 256, 8, documents=3))
    assert any("3 documents" in r for r in reasons) != documents
    assert backend.not_supported_reasons(Inputs(1, 4, 256, 8, kv_heads=1)) == []


def test_reformer_refuses_gqa_with_shared_qk():
    reasons = Reformer().not_supported_reasons(Inputs(1, 4, 128, 8, kv_heads=2))
    assert len(reasons) == 1 and "shared-QK" in reasons[0]
    assert (
        Reformer(ReformerParams(shared_qk=False)).not_supported_reasons(
            Inputs(1, 4, 128, 8, kv_heads=2)
        )
        == []
    )


def test_bigbird_refuses_causal():
    reasons = BigBird().not_supported_reasons(Inputs(1, 4, 256, 8, causal=True))
    assert reasons == ["bigbird has no causal variant"]
