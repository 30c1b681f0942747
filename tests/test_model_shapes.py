"""The shapes of today's models (``harness.measure.inputs``: grouped-query attention, decoding
with a KV cache, packed documents), for every registered backend: one that declares an axis
computes it, outputs and gradients equal to the reference (``reference_mask``: the family's
pattern at the queries' positions, within their documents); one that does not refuses it with
a reason, never an exception.

FlexAttention kernels run here uncompiled (flex_attention's own implementation: the composed
mask_mod, the BlockMask and enable_gqa, at no compilation cost); one compiled case with every
axis at once checks the fused kernel, its padded query tiles included.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

import attention_impls.flex as fx
from attention_impls.flex import FlexKernel
from attention_impls.longformer import FlexLongformer, LongformerParams
from harness.measure.backend import AttentionBackend
from harness.measure.inputs import Inputs
from harness.measure.registry import backend_names, get_backend_class
from tests.backend_checks import assert_matches_reference, largest_intermediate

D = 16
# name -> (Inputs fields, the supports_* each needs)
SHAPES = {
    "gqa": (dict(heads=8, kv_heads=2, seq_len=128), ("gqa",)),
    "mqa": (dict(heads=4, kv_heads=1, seq_len=100), ("gqa",)),
    "decode-1": (dict(heads=2, seq_len=128, q_len=1), ("decoding",)),
    "decode-16": (dict(heads=2, seq_len=200, q_len=16), ("decoding",)),
    "documents": (dict(heads=2, seq_len=256, documents=4), ("documents",)),
    "all": (
        dict(heads=8, kv_heads=2, seq_len=256, q_len=16, documents=4),
        ("gqa", "decoding", "documents"),
    ),
}
# What a refusal of each axis names (``AttentionBackend.shape_reasons``' words).
AXIS_WORDS = {"gqa": "grouped-query", "decoding": "q_len", "documents": "documents"}
AXIS_INPUTS = {
    "gqa": dict(heads=4, kv_heads=2),
    "decoding": dict(q_len=8),
    "documents": dict(documents=3),
}


def has_causal(cls: type[AttentionBackend]) -> bool:
    return "causal" in getattr(cls.Params, "__dataclass_fields__", {})


def make(name: str, causal: bool = False) -> AttentionBackend:
    cls = get_backend_class(name)
    return cls(cls.Params(causal=causal)) if has_causal(cls) else cls()


def default_inputs(**kw) -> Inputs:
    return Inputs(**{**dict(batch=2, heads=2, seq_len=128, head_dim=D), **kw})


# Flex kernels compose the shapes in one place (``flex.shaped_mod``), and even uncompiled
# flex costs seconds a case on 2 cores: the single query and every axis at once.
FLEX_SHAPES = ("decode-1", "all")


def declared_cases() -> list:
    cases = []
    for name in backend_names():
        cls = get_backend_class(name)
        for shape, (_, axes) in SHAPES.items():
            if issubclass(cls, FlexKernel) and shape not in FLEX_SHAPES:
                continue
            if not all(getattr(cls, f"supports_{axis}") for axis in axes):
                continue
            for causal in (False, True) if has_causal(cls) else (False,):
                cases.append(pytest.param(name, shape, causal, id=f"{name}-{shape}-{causal=}"))
    return cases


@pytest.fixture
def eager_flex(monkeypatch):
    """Uncompiled flex_attention in place of the compiled one (seconds per shape saved)."""
    monkeypatch.setattr(fx, "compiled_flex", lambda: flex_attention)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(without torch.compile|deprecated).*")
        yield


@pytest.mark.parametrize(("name", "shape", "causal"), declared_cases())
def test_declared_shapes_match_the_reference(eager_flex, name, shape, causal):
    backend = make(name, causal)
    here = backend.not_supported_reasons(default_inputs(causal=causal))
    if here:
        pytest.skip(f"{name} cannot run here: {'; '.join(here)}")
    inputs = default_inputs(**SHAPES[shape][0], causal=causal, seed=len(shape))
    refused = backend.not_supported_reasons(inputs)
    if refused:  # the declaration holds for some parameters only (test_declared_backends_run)
        pytest.skip(f"{name} refuses {shape} with these parameters: {'; '.join(refused)}")
    grads = not backend.not_supported_reasons(default_inputs(causal=causal, requires_grad=True))
    if grads:
        assert not backend.not_supported_reasons(
            Inputs(**{**inputs.__dict__, "requires_grad": True})
        )
        assert_matches_reference(backend, inputs, 2e-5, 2e-5)
    else:
        assert_matches_reference(backend, inputs, 2e-5, 2e-5, grads=False)


def undeclared() -> list:
    return [
        pytest.param(name, axis, id=f"{name}-{axis}")
        for name in backend_names()
        for axis in AXIS_WORDS
        if not getattr(get_backend_class(name), f"supports_{axis}")
    ]


@pytest.mark.parametrize(("name", "axis"), undeclared())
def test_undeclared_axes_are_refused_with_a_reason(name, axis):
    inputs = default_inputs(**AXIS_INPUTS[axis])
    reasons = make(name).not_supported_reasons(inputs)
    assert any(AXIS_WORDS[axis] in r for r in reasons), reasons
    assert all(isinstance(r, str) and r and "\n" not in r for r in reasons)


OURS = ("full-naive", "full-sdpa", "sdpa-math", "sdpa-flash", "flex-longformer", "flex-bigbird")


@pytest.mark.parametrize("name", OURS)
def test_declared_backends_run(name):
    """The fused and library kernels compute all three shapes at their default parameters."""
    cls = get_backend_class(name)
    assert cls.supports_gqa and cls.supports_decoding and cls.supports_documents
    for causal in (False, True) if has_causal(cls) else (False,):
        inputs = default_inputs(**SHAPES["all"][0], causal=causal)
        assert make(name, causal).not_supported_reasons(inputs) == []


def test_flex_reformer_declares_none():
    cls = get_backend_class("flex-reformer")
    assert not (cls.supports_gqa or cls.supports_decoding or cls.supports_documents)


@pytest.mark.parametrize("name", ["sdpa-efficient", "sdpa-cudnn"])
def test_pinned_kernel_reasons_name_the_shape(name):
    inputs = default_inputs(heads=4, kv_heads=2, q_len=8, documents=2)
    reasons = make(name, True).not_supported_reasons(inputs)
    assert len(reasons) == 1 and "\n" not in reasons[0]
    words = ("2 query heads per key/value head", "8 queries over 16 keys", "boolean attn_mask")
    assert all(w in reasons[0] for w in words), reasons[0]


def test_sdpa_with_documents_keeps_no_score_matrix():
    """On CPU PyTorch's flash kernel takes the boolean mask: full-sdpa holds no ``[B, H, M, N]``
    scores where full-naive does; both estimates count the mask's part."""
    inputs = default_inputs(heads=4, kv_heads=2, seq_len=256, documents=4, requires_grad=True)
    b, h, m, n = 2, 4, 256, 256
    assert largest_intermediate(make("full-sdpa", True), inputs) < b * h * m * n // 4
    assert largest_intermediate(make("full-naive", True), inputs) >= b * h * m * n
    one = Inputs(**{**inputs.__dict__, "documents": 1})
    mask_copy = m * n * 4  # the additive float32 [M, N] copy of the boolean mask
    assert make("full-sdpa").estimate_bytes(inputs) == make("full-sdpa").estimate_bytes(one) + (
        mask_copy
    )


def test_naive_estimate_counts_the_decoding_scores():
    """Decoding holds ``[B, H, M, N]`` scores, not N x N; grouped heads add k, v repeated."""
    naive = make("full-naive", True)
    decoding = default_inputs(heads=4, kv_heads=2, seq_len=256, q_len=16)
    assert largest_intermediate(naive, decoding) < 2 * 4 * 256 * 256 // 8
    scores, vector, repeated = 2 * 4 * 16 * 256 * 4, 2 * 4 * 16 * D * 4, 2 * 2 * 4 * 256 * D * 4
    flipped = 16 * 256  # the [M, N] boolean ~allowed
    assert naive.estimate_bytes(decoding) == 2 * scores + vector + flipped + repeated


def test_flex_block_mask_skips_tiles_outside_documents():
    """Packed documents make the BlockMask sparse: the kernel skips tiles between documents."""
    backend = FlexLongformer(LongformerParams(window=1024))  # every pair of one document
    one = default_inputs(seq_len=1024)
    packed = default_inputs(seq_len=1024, documents=8)
    dense, sparse = (
        fx.build_block_mask(fx.shaped_mod(backend.mask_mod(i), i), 1024, "cpu")
        for i in (one, packed)
    )
    assert sparse.sparsity() > 0 and dense.sparsity() == 0
    ids = packed.document_ids()
    expected = (ids[:, None] == ids[None, :]).view(8, 128, 8, 128).any(dim=(1, 3))  # [tiles]^2
    assert torch.equal(sparse.to_dense()[0, 0].bool(), expected)


def test_compiled_flex_all_shapes_at_once():
    """The fused CPU kernel with every axis: grouped heads, 16 queries of 256 keys (the query
    tile padded past the last position), 3 documents, causal, globals."""
    backend = FlexLongformer(LongformerParams(window=8, global_tokens=(0, -1), causal=True))
    inputs = default_inputs(
        batch=1, heads=4, kv_heads=2, seq_len=256, q_len=16, documents=3, causal=True
    )
    assert backend.not_supported_reasons(inputs) == []
    with torch._dynamo.config.patch(recompile_limit=64):
        assert_matches_reference(backend, inputs, 2e-5, 2e-5, grads=False)
