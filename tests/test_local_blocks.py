"""LRA's local attention in non-overlapping blocks: the mask against its definition (and against
the families that come close without being it), the plain and the Flex backend against that
mask on every shape, the pair count, sparsity, memory."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

import attention_impls.flex as fx
from attention_impls.bigbird import BigBird, BigBirdParams
from attention_impls.local import FlexLocalBlocks, LocalBlocks, LocalBlocksParams
from attention_impls.longformer import Longformer, LongformerParams
from attention_impls.strided import Strided, StridedParams
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from harness.store.facts import Promise
from tests.backend_checks import assert_matches_reference, largest_intermediate
from tests.test_memory_estimates import assert_within, ratios, sweep


def make(block_size: int = 64, causal: bool = False) -> LocalBlocks:
    return LocalBlocks(LocalBlocksParams(block_size, causal))


def definition(n: int, b: int, causal: bool) -> torch.Tensor:
    """Written out pair by pair: blocks 0..b-1, b..2b-1, ...; i attends j in its own block."""
    mask = torch.zeros(n, n, dtype=torch.bool)
    for start in range(0, n, b):
        for i in range(start, min(start + b, n)):
            for j in range(start, min(start + b, n)):
                mask[i, j] = j <= i or not causal
    return mask


CASES = [(n, b, c) for n in (1, 2, 7, 64, 100, 257) for b in (1, 5, 16, 64) for c in (False, True)]
CASES = [case for case in CASES if case[1] <= case[0]]


@pytest.mark.parametrize(("n", "b", "causal"), CASES)
def test_mask_is_the_definition_and_pairs_count_it(n, b, causal):
    backend = make(b, causal)
    inputs = Inputs(1, 1, n, 8)
    q, k, _ = inputs.make_qkv()
    mask = backend.mask(inputs, q, k)[0, 0]
    assert torch.equal(mask, definition(n, b, causal))
    assert backend.attended_pairs(n) == mask.sum().item()


def test_no_other_family_is_this_pattern():
    """The near relatives attend more: BigBird without global or random blocks keeps the
    neighbouring blocks, Longformer's and the strided windows slide across block edges."""
    n, b = 64, 16
    inputs = Inputs(1, 1, n, 8)
    q, k, _ = inputs.make_qkv()
    local = make(b).mask(inputs, q, k)[0, 0]
    others = [
        BigBird(BigBirdParams(b, 0, 0)),
        Longformer(LongformerParams(window=b - 1)),
        Strided(StridedParams(stride=b)),
    ]
    for other in others:
        mask = other.mask(inputs, q, k)[0, 0]
        assert (mask | local).equal(mask) and mask.sum() > local.sum(), other.name


@pytest.mark.parametrize(("n", "b", "causal"), CASES)
def test_plain_matches_reference(n, b, causal):
    assert_matches_reference(make(b, causal), Inputs(2, 3, n, 16, seed=n + b, causal=causal))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "b"), [(64, 16), (100, 7), (257, 64)])
@pytest.mark.parametrize(
    ("kv_heads", "q_len", "documents"),
    [(2, None, 1), (None, None, 4), (1, None, 3), (2, 1, 1), (None, 40, 1), (2, 37, 4)],
)
def test_shapes(n, b, causal, kv_heads, q_len, documents):
    backend = make(b, causal)
    inputs = Inputs(2, 8, n, 8, dtype=torch.float64, seed=n + documents, kv_heads=kv_heads,
                    q_len=q_len, documents=documents, causal=causal)  # fmt: skip
    assert backend.not_supported_reasons(inputs) == []
    mask = assert_matches_reference(backend, inputs, 1e-9, 1e-9)
    if documents > 1:  # the documents really cut blocks: fewer pairs than without them
        plain = Inputs(**{**inputs.__dict__, "documents": 1})
        q, k, _ = plain.make_qkv()
        positions = torch.arange(inputs.query_len) + inputs.query_offset
        assert mask[0, 0].sum() < backend.mask(plain, q, k, positions)[0, 0].sum()


def test_no_quadratic_intermediate():
    n = 2048
    for kw in ({}, {"causal": True, "documents": 4}, {"kv_heads": 1}):
        inputs = Inputs(1, 2, n - 5, 16, requires_grad=True, **kw)
        assert 0 < largest_intermediate(make(64, kw.get("causal", False)), inputs) < n * n // 8


def test_forward_flops_from_pairs():
    # N 10, b 4: blocks of 4, 4, 2 positions: 16 + 16 + 4 pairs, causal 10 + 10 + 3
    inputs = Inputs(2, 3, 10, 8)
    assert make(4).forward_flops(inputs) == 4 * 2 * 3 * 8 * 36
    assert make(4, causal=True).forward_flops(inputs) == 4 * 2 * 3 * 8 * 23
    assert make(4).row_facts(inputs, "fwd")["promise"] == "O(n)"


@pytest.mark.parametrize(
    ("b", "n", "errors"),
    [
        (64, 64, []),
        (65, 64, ["block_size 65 exceeds the sequence length 64"]),
        (0, 64, ["block_size must be >= 1, got 0"]),
    ],
)
def test_param_errors(b, n, errors):
    assert make(b).param_errors(n) == errors
    assert FlexLocalBlocks(LocalBlocksParams(b)).param_errors(n) == errors


@pytest.fixture
def eager_flex(monkeypatch):
    """Uncompiled flex_attention in place of the compiled one: no compilation, float64."""
    monkeypatch.setattr(fx, "compiled_flex", lambda: flex_attention)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(without torch.compile|deprecated).*")
        yield


@pytest.mark.parametrize(
    ("n", "b", "causal", "kw"),
    [(64, 16, False, {}), (200, 64, True, {}), (150, 7, False, {"kv_heads": 1, "documents": 3}),
     (130, 64, True, {"q_len": 50, "documents": 2})],
)  # fmt: skip
def test_flex_matches_reference(eager_flex, n, b, causal, kw):
    # FlexAttention has no backward on the CPU: gradients are checked on CUDA (below)
    inputs = Inputs(1, 2, n, 16, dtype=torch.float64, causal=causal, **kw)
    assert_matches_reference(FlexLocalBlocks(LocalBlocksParams(b, causal)), inputs, grads=False)


@pytest.mark.cuda
@pytest.mark.parametrize("causal", [False, True])
def test_flex_matches_reference_cuda(causal):
    inputs = Inputs(1, 2, 1000, 64, device="cuda", seed=5)
    backend = FlexLocalBlocks(LocalBlocksParams(128, causal))
    assert_matches_reference(backend, inputs, 2e-5, 2e-5)


def test_flex_compiled_forward():
    backend = FlexLocalBlocks(LocalBlocksParams(64, causal=True))
    inputs = Inputs(1, 2, 300, 16, seed=3)
    if backend.not_supported_reasons(inputs):
        pytest.skip("; ".join(backend.not_supported_reasons(inputs)))
    with torch._dynamo.config.patch(recompile_limit=64):
        assert_matches_reference(backend, inputs, grads=False)


def test_flex_holds_the_pattern():
    flex = FlexLocalBlocks(LocalBlocksParams(block_size=64))
    assert isinstance(flex.plain, LocalBlocks) and flex.plain.params == flex.params
    assert (flex.family, flex.promise, flex.is_sparse) == ("local", Promise(1), True)
    assert flex.attended_pairs(100) == flex.plain.attended_pairs(100) == 64 * 64 + 36 * 36
    assert flex.tile(Inputs(1, 1, 256, 8)) == 64  # whole tiles are whole blocks on CPU
    assert FlexLocalBlocks(LocalBlocksParams(16)).tile(Inputs(1, 1, 256, 8)) == 128
    reasons = flex.not_supported_reasons(Inputs(1, 1, 256, 8, requires_grad=True))
    assert any("inference only" in r for r in reasons)
    for name, cls in (("local-blocks", LocalBlocks), ("flex-local-blocks", FlexLocalBlocks)):
        assert get_backend_class(name) is cls


@pytest.mark.parametrize("causal", [(False,), (True,)])
def test_estimates_are_within_a_quarter_of_the_measured_peak(tmp_path, causal):
    assert_within(ratios(sweep(tmp_path, ("local-blocks",), causal=causal)))
