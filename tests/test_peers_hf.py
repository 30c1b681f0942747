"""HuggingFace transformers' Longformer, BigBird and Reformer attention as peers: each against the
dense reference of what it computes (outputs and gradients, lengths that need padding), against
HF's own module where we replace part of it, against our family where the patterns coincide,
their deviations shown, and their refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attention_impls.bigbird import BigBird, BigBirdParams
from attention_impls.longformer import Longformer, LongformerParams
from attention_impls.peers import optional
from attention_impls.peers.common import counted_attention
from attention_impls.peers.hf_bigbird import HFBigBird, block_counts, hf_plan
from attention_impls.peers.hf_longformer import HFLongformer
from attention_impls.peers.hf_reformer import HFReformer
from harness.measure.inputs import Inputs
from harness.measure.reference import masked_attention
from tests.backend_checks import assert_matches_reference, largest_intermediate

pytestmark = pytest.mark.skipif(
    optional.missing("transformers", "transformers") is not None,
    reason="transformers is not installed (the peers extra)",
)


def longformer(window: int, global_tokens: tuple[int, ...] = ()) -> HFLongformer:
    return HFLongformer(HFLongformer.Params(window=window, global_tokens=global_tokens))


def bigbird(block_size: int, random_blocks: int) -> HFBigBird:
    return HFBigBird(HFBigBird.Params(block_size=block_size, random_blocks=random_blocks))


def reformer(chunk_size: int, n_hashes: int, n_buckets: int | None = None) -> HFReformer:
    params = HFReformer.Params(n_hashes=n_hashes, n_buckets=n_buckets, chunk_size=chunk_size)
    return HFReformer(params)


class Copy(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


# -- Longformer ------------------------------------------------------------------------------
# (N, w, global tokens); 50, 37, 100 and 257 are no multiple of 2w: HF's padding
LONGFORMER_CASES = [
    (64, 8, ()),
    (50, 4, ()),
    (33, 2, ()),
    (50, 4, (0, 7, -1)),
    (37, 16, (3,)),
    (100, 7, (0, 5, 9, -1)),
    (257, 16, (0, -1)),
]


@pytest.mark.parametrize(("n", "window", "global_tokens"), LONGFORMER_CASES)
def test_longformer_matches_reference_and_our_longformers_pattern(n, window, global_tokens):
    backend = longformer(window, global_tokens)
    inputs = Inputs(2, 3, n, 8, seed=n)
    mask = assert_matches_reference(backend, inputs)
    ours = Longformer(LongformerParams(window=window, global_tokens=global_tokens))
    q, k, _ = inputs.make_qkv()
    assert torch.equal(mask[0, 0], ours.mask(inputs, q, k)[0, 0])
    assert backend.attended_pairs(n) == mask[0, 0].sum().item() == ours.attended_pairs(n)


@pytest.mark.parametrize("global_tokens", [(), (0, 9, -1)])
def test_longformer_closure_is_hfs_forward(global_tokens):
    """The closure replays LongformerSelfAttention.forward after its projections: with identity
    projections (copies: HF scales its queries in place), q = k = v = the hidden states, both
    give the same output."""
    from transformers.models.longformer.modeling_longformer import (
        LongformerConfig,
        LongformerSelfAttention,
    )

    b, h, n, d, w = 2, 2, 64, 8, 4
    config = LongformerConfig(hidden_size=h * d, num_attention_heads=h, attention_window=[2 * w])
    attn = LongformerSelfAttention(config, layer_id=0).eval()
    for name in ("query", "key", "value", "query_global", "key_global", "value_global"):
        setattr(attn, name, Copy())
    hidden = torch.randn(b, n, h * d)
    mask = torch.zeros(b, n)  # HF's extended mask: 0 local, +10000 global
    mask[:, [g % n for g in global_tokens]] = 10000.0
    (expected,) = attn(
        hidden, attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=mask > 0,
        is_global_attn=bool(global_tokens),
    )  # fmt: skip
    x = hidden.view(b, n, h, d).transpose(1, 2)  # [B, H, N, D]
    out = longformer(w, global_tokens).prepare(Inputs(b, h, n, d))(x, x, x)
    torch.testing.assert_close(out.transpose(1, 2).reshape(b, n, h * d), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_longformer_half_precision(dtype):
    assert_matches_reference(longformer(8, (0,)), Inputs(1, 2, 100, 16, dtype=dtype), 2e-2, 2e-2)


def test_longformer_holds_no_quadratic_tensor():
    n = 2048
    largest = largest_intermediate(longformer(16, (0, -1)), Inputs(1, 1, n, 16, requires_grad=True))
    assert 0 < largest < n * n // 4


# -- BigBird ---------------------------------------------------------------------------------
# (N, b, r); 100, 130 and 1000 need padding; 1000 and 1024 take HF's old-plan branch
BIGBIRD_CASES = [(96, 8, 1), (100, 8, 1), (130, 8, 2), (200, 8, 3), (1000, 64, 3), (1024, 64, 3)]


@pytest.mark.parametrize(("n", "block_size", "random_blocks"), BIGBIRD_CASES)
def test_bigbird_matches_reference(n, block_size, random_blocks):
    backend = bigbird(block_size, random_blocks)
    inputs = Inputs(1 if n > 500 else 2, 3, n, 8, seed=n)
    mask = assert_matches_reference(backend, inputs)
    assert backend.case_pairs(inputs) == mask[0].sum().item() / inputs.heads


@pytest.mark.parametrize(("n", "block_size", "random_blocks"), [(96, 8, 1), (1024, 64, 3)])
def test_bigbird_closure_is_hfs_training_mode_call(n, block_size, random_blocks):
    """The plan drawn in prepare and replayed is the one HF draws itself in training mode."""
    from transformers.models.big_bird.modeling_big_bird import BigBirdModel

    from attention_impls.peers.hf_bigbird import _module

    inputs = Inputs(2, 3, n, 8, seed=5)
    q, k, v = inputs.make_qkv()
    attn = _module(3, 8, block_size, random_blocks).train()
    blocked, band, rows, cols = BigBirdModel.create_masks_for_block_sparse_attn(
        torch.ones(2, n), block_size
    )
    expected, _ = attn.bigbird_block_sparse_attention(
        q, k, v, band, rows, cols, blocked, blocked, 3, random_blocks, 8, block_size, block_size,
        2, n, n, seed=5, plan_from_length=None, plan_num_rand_blocks=None,
    )  # fmt: skip
    out = bigbird(block_size, random_blocks).prepare(inputs)(q, k, v)
    torch.testing.assert_close(out, expected.transpose(1, 2))


def test_bigbird_eval_mode_plan_is_block_zero_r_more_times():
    """HF's eval mode: every random block is block 0, which then weighs 1 + r times in the rows
    1 .. nb-2; the training-mode plan we drive differs from it."""
    from transformers.models.big_bird.modeling_big_bird import BigBirdModel

    from attention_impls.peers.hf_bigbird import _module

    n, b, r = 96, 8, 2
    nb = n // b
    inputs = Inputs(1, 2, n, 8, seed=1)
    q, k, v = inputs.make_qkv()
    attn = _module(2, 8, b, r).eval()
    blocked, band, rows, cols = BigBirdModel.create_masks_for_block_sparse_attn(torch.ones(1, n), b)
    out, _ = attn.bigbird_block_sparse_attention(
        q, k, v, band, rows, cols, blocked, blocked, 2, r, 8, b, b, 1, n, n,
        seed=1, plan_from_length=None, plan_num_rand_blocks=None,
    )  # fmt: skip
    zeros = np.zeros((2, nb - 2, r), dtype=np.int32)  # the eval plan
    counts = block_counts(zeros, nb)[:, torch.arange(n) // b][:, :, torch.arange(n) // b]
    assert counts[:, b : n - b, :b].eq(1 + r).all()  # block 0, scored 1 + r times
    torch.testing.assert_close(
        out.transpose(1, 2), counted_attention(q, k, v, counts[None], q.dtype)
    )
    ours = bigbird(b, r).prepare(inputs)(q, k, v)
    assert (ours - out.transpose(1, 2)).abs().max() > 0.1


def test_bigbird_pattern_is_ours_with_one_global_block_plus_hfs_random_blocks():
    n, b, r = 160, 8, 2
    nb = n // b
    backend, inputs = bigbird(b, r), Inputs(1, 4, n, 8, seed=3)
    plan = backend.plan(inputs)  # [H, nb - 2, r]
    q, k, _ = inputs.make_qkv()
    fixed = BigBird(BigBirdParams(block_size=b, global_blocks=1, random_blocks=0)).mask(
        inputs, q, k
    )
    mask = backend.mask(inputs, q, k)[0]  # [H, N, N]
    for head in range(inputs.heads):
        drawn = torch.zeros(nb, nb, dtype=torch.bool)
        for row in range(1, nb - 1):
            blocks = plan[head, row - 1].tolist()
            # the paper's rule: distinct blocks, neither the row's window nor a global block
            assert len(set(blocks)) == r
            assert not set(blocks) & {0, nb - 1, row - 1, row, row + 1}
            drawn[row, blocks] = True
        random = drawn[torch.arange(n) // b][:, torch.arange(n) // b]  # [N, N]
        assert torch.equal(mask[head], fixed[0, 0] | random)
        assert not (fixed[0, 0] & random).any()


def test_bigbird_old_plan_at_1024_draws_the_last_global_block_twice():
    """HF's old plans take random blocks among the first 1024 positions, which at length 1024
    hold the last block: a key scored twice in some rows, which the reference counts."""
    nb = 1024 // 64
    counts = block_counts(hf_plan(1024, 64, 3, 4, 0), nb)
    twice = (counts > 1).nonzero()
    assert len(twice) and (twice[:, 2] == nb - 1).all()
    assert hf_plan(4096, 64, 3, 4, 0).max() < 1024 // 64  # the first 1024 positions only


def test_bigbird_plan_leaves_numpys_global_state():
    np.random.seed(11)
    expected = np.random.rand()
    np.random.seed(11)
    hf_plan(200, 8, 3, 2, seed=12345)
    assert np.random.rand() == expected


def test_bigbird_builds_hfs_dense_attention_probs():
    """HF 5.x builds ``[B, H, N, N]`` attention_probs in every call (module docstring); should it
    stop, this fails and the docstring and estimate_bytes need changing."""
    n = 512
    inputs = Inputs(1, 2, n, 8)
    assert largest_intermediate(bigbird(16, 2), inputs) >= 2 * n * n


# -- Reformer --------------------------------------------------------------------------------
# (N, c, rounds, buckets); 70, 37 and 130 need padding
REFORMER_CASES = [
    (64, 8, 1, None),
    (64, 8, 2, None),
    (70, 8, 3, None),
    (37, 8, 4, 4),
    (100, 16, 2, None),
    (130, 4, 4, 8),
]


@pytest.mark.parametrize(("n", "chunk_size", "n_hashes", "n_buckets"), REFORMER_CASES)
def test_reformer_matches_hfs_formula(n, chunk_size, n_hashes, n_buckets):
    backend = reformer(chunk_size, n_hashes, n_buckets)
    inputs = Inputs(2, 2, n, 8, seed=n)
    mask = assert_matches_reference(backend, inputs)
    assert not mask.diagonal(dim1=-2, dim2=-1).any()  # self only when alone: never here


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_reformer_other_dtypes(dtype):
    precise = dtype == torch.float64
    tol = 1e-9 if precise else 2e-2
    assert_matches_reference(reformer(8, 2), Inputs(1, 2, 100, 16, dtype=dtype), tol, tol, precise)


def test_reformer_rounds_are_no_mask():
    """Several rounds, merged without deduplication, are not softmax attention under the union
    of their windows: the reference has to be HF's own formula."""
    backend, inputs = reformer(8, 4), Inputs(1, 2, 96, 8, seed=2)
    q, k, v = inputs.make_qkv()
    out = backend.prepare(inputs)(q, k, v)
    keys = backend.reference_keys(q, k)
    masked = masked_attention(q, keys, v, backend.mask(inputs, q, k), compute_dtype=q.dtype)
    assert (out - masked).abs().max() > 1e-2


def test_reformer_first_chunk_looks_back_into_the_previous_round(monkeypatch):
    """HF sorts the rounds as one sequence: a round's first chunk attends the previous round's
    last chunk. Counts that wrap within each round instead do not give HF's output."""
    backend, inputs = reformer(8, 3), Inputs(1, 2, 64, 8, seed=4)
    q, k, v = inputs.make_qkv()
    out = backend.prepare(inputs)(q, k, v)
    rows = torch.arange(64)
    torch.testing.assert_close(out, backend.reference(inputs, q, k, v, rows, q.dtype))
    per_round = 64 // 8

    def within_rounds(chunks, r, rows_, n):
        local = chunks[:, :, r] - r * per_round  # [B, H, N] chunk within round r
        own, keys = local[..., rows_, None], local[..., None, :n]
        return ((keys == own) | (keys == (own - 1) % per_round)).to(torch.uint8)

    monkeypatch.setattr(backend, "round_counts", within_rounds)
    assert (out - backend.reference(inputs, q, k, v, rows, q.dtype)).abs().max() > 1e-3


def test_reformer_hashes_with_the_seed_and_ignores_k():
    backend, inputs = reformer(8, 2), Inputs(1, 2, 64, 8, seed=1)
    q, k, v = inputs.make_qkv()
    out = backend.prepare(inputs)(q, k, v)
    torch.testing.assert_close(backend.prepare(inputs)(q, torch.randn_like(k), v), out)
    other = backend.prepare(Inputs(1, 2, 64, 8, seed=2))(q, k, v)
    assert (other - out).abs().max() > 1e-3  # other rotations, other buckets


def test_reformer_holds_no_quadratic_tensor():
    n = 2048
    largest = largest_intermediate(reformer(32, 2), Inputs(1, 1, n, 16, requires_grad=True))
    assert 0 < largest < n * n // 4


# -- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("backend", "inputs", "fragment"),
    [
        (longformer(8), Inputs(1, 2, 64, 8, dtype=torch.float64), "softmax in float32"),
        (longformer(8), Inputs(1, 4, 64, 8, kv_heads=2), "no grouped-query attention"),
        (longformer(8), Inputs(1, 2, 64, 8, q_len=1), "no query length"),
        (longformer(8), Inputs(1, 2, 64, 8, documents=3), "no packed documents"),
        (longformer(8), Inputs(1, 2, 64, 8, causal=True), "longformer has no causal variant"),
        (longformer(64), Inputs(1, 2, 64, 8), "window 64 must be smaller than the length 64"),
        (longformer(1), Inputs(1, 2, 64, 8), "fails at window 1"),
        (bigbird(8, 2), Inputs(1, 2, 72, 8), "full attention at N <= (5 + 2r) b = 72"),
        (bigbird(8, 0), Inputs(1, 2, 200, 8), "fails with random_blocks 0"),
        (bigbird(8, 1), Inputs(1, 4, 200, 8, kv_heads=1), "no grouped-query attention"),
        (bigbird(8, 1), Inputs(1, 2, 200, 8, causal=True), "bigbird has no causal variant"),
        (reformer(64, 2), Inputs(1, 2, 64, 8), "without hashing at N <= chunk_size 64"),
        (reformer(8, 2, 3), Inputs(1, 2, 64, 8), "n_buckets must be even"),
        (reformer(8, 2), Inputs(1, 4, 64, 8, kv_heads=2), "no grouped-query attention"),
        (reformer(8, 2), Inputs(1, 2, 64, 8, causal=True), "is_decoder"),
        (reformer(8, 2), Inputs(1, 2, 64, 8, q_len=4), "no query length"),
    ],
)
def test_refusals(backend, inputs, fragment):
    reasons = backend.not_supported_reasons(inputs)
    assert any(fragment in r for r in reasons), reasons


@pytest.mark.parametrize(
    ("backend", "n"),
    [
        (longformer(1), 64),
        (bigbird(8, 2), 72),
        (bigbird(8, 0), 200),
        (reformer(64, 2), 64),
    ],
)
def test_hfs_own_limits_skip_rows_and_leave_the_command_line(backend, n):
    """A family's parameters that HF cannot take are reasons (a skipped row), not parameter
    errors, which would refuse a sweep over every backend of the family."""
    assert backend.param_errors(n) == []
    assert backend.not_supported_reasons(Inputs(1, 2, n, 8))


@pytest.mark.parametrize(
    "backend", [longformer(8, (0,)), bigbird(8, 1), reformer(8, 2)], ids=lambda b: b.name
)
def test_a_missing_transformers_is_a_reason(backend, monkeypatch):
    inputs = Inputs(1, 2, 200, 8)
    assert backend.not_supported_reasons(inputs) == []
    reason = "transformers is not installed or does not import (No module named 'x'); pip ..."
    monkeypatch.setattr(optional, "missing", lambda module, distribution, extra="peers": reason)
    assert backend.not_supported_reasons(inputs) == [reason]


@pytest.mark.cuda
@pytest.mark.parametrize(
    "backend", [longformer(8, (0, -1)), bigbird(8, 2), reformer(8, 2)], ids=lambda b: b.name
)
def test_matches_reference_cuda(backend):
    # Looser: GPU kernels reduce in other orders than the dense reference's matmul.
    assert_matches_reference(backend, Inputs(2, 2, 100, 16, device="cuda"), 1e-4, 1e-4)
