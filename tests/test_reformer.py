"""Reformer LSH attention: output and gradients against the dense masked reference, and the mask
and attention pattern against the paper's definition recomputed here one token at a time."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attention_impls.lsh import lsh_buckets, num_buckets, rotations
from attention_impls.reformer import Reformer, ReformerParams
from harness.measure.inputs import Inputs
from harness.measure.reference import masked_attention
from harness.measure.registry import get_backend_class
from tests.backend_checks import assert_matches_reference, largest_intermediate


def expected_pattern(
    inputs: Inputs, params: ReformerParams, q: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attended pairs ``[B, H, N, N]`` and, per pair, how many window slots over all rounds
    hold it.

    Straight from the definition: rotations drawn round by round from ``inputs.seed`` (their own
    stream); bucket =
    argmax([x R ; -x R]); sort by (bucket, position); chunks of c; a query's window is its own
    chunk and the previous one: of its round (chunk 0: the round's last chunk) or, looking back
    across rounds, chunk 0's is the previous round's last; one chunk: itself only. Shared-QK
    hashes q / ||q|| and drops self unless alone. Padding is implicit: padded tokens sort after
    all real ones, so they never move a real one.
    """
    b, h, n, d = inputs.shape
    c, rounds = params.chunk_size, params.n_hashes
    n_buckets = params.n_buckets or max(2, 2 * round(params.buckets_per_chunk * n / (2 * c)))
    # the rotations' own stream, not the inputs' (q's first elements would be a rotation)
    gen = torch.Generator().manual_seed(inputs.seed ^ 0x4C534852)
    rot = torch.randn((rounds, h, d, n_buckets // 2), generator=gen)
    n_chunks = math.ceil(n / c)
    keys = q / q.norm(dim=-1, keepdim=True) if params.shared_qk else k
    counts = torch.zeros(b, h, n, n, dtype=torch.long)
    for bi in range(b):
        for hi in range(h):

            def chunk_of(x: torch.Tensor, r: int, hi=hi, bi=bi) -> list[int]:
                buckets = []
                for t in range(n):
                    proj = x[bi, hi, t] @ rot[r, hi]
                    buckets.append(int(torch.cat([proj, -proj]).argmax()))
                order = sorted(range(n), key=lambda t: (buckets[t], t))
                chunk = [0] * n
                for slot, t in enumerate(order):
                    chunk[t] = slot // c
                return chunk

            cq = [chunk_of(keys if params.shared_qk else q, r) for r in range(rounds)]
            ck = cq if params.shared_qk else [chunk_of(k, r) for r in range(rounds)]
            for r in range(rounds):
                for i in range(n):
                    window = [(r, cq[r][i])]  # (round, chunk)
                    if n_chunks > 1 and cq[r][i] > 0:
                        window.append((r, cq[r][i] - 1))
                    elif n_chunks > 1:
                        back = (r - 1) % rounds if params.look_back_across_rounds else r
                        window.append((back, n_chunks - 1))
                    for j in range(n):
                        counts[bi, hi, i, j] += sum(ck[rr][j] == cc for rr, cc in window)
    mask = counts > 0
    if params.shared_qk:
        eye = torch.eye(n, dtype=torch.bool)
        alone = ~(mask & ~eye).any(dim=-1, keepdim=True)
        mask &= ~eye | alone
    return mask, counts


# the conventions (``attention_impls.reformer``), every combination: (unscaled logits, count per
# round, look back across rounds)
CONVENTIONS = list(itertools.product([False, True], repeat=3))


def conventions(unscaled: bool, per_round: bool, cross: bool) -> dict:
    return dict(unscaled_logits=unscaled, count_per_round=per_round, look_back_across_rounds=cross)


def backend(**kw) -> Reformer:
    return Reformer(ReformerParams(**kw))


@pytest.mark.parametrize(
    "n, params",
    [
        (1, dict(chunk_size=4)),  # a single token: it can only attend itself
        (5, dict(chunk_size=8)),  # one chunk, padded
        (8, dict(chunk_size=8, n_hashes=1)),  # one chunk, exact
        (16, dict(chunk_size=8, shared_qk=False)),  # two chunks
        (13, dict(chunk_size=8, n_hashes=2)),  # two chunks, padded
        (64, dict(chunk_size=8, n_hashes=1)),
        (64, dict(chunk_size=8, n_hashes=1, shared_qk=False)),
        (64, dict(chunk_size=8, n_hashes=2)),
        (64, dict(chunk_size=8, n_hashes=4, shared_qk=False)),
        (100, dict(chunk_size=8)),  # padded, several chunks
        (45, dict(chunk_size=8, n_hashes=1, shared_qk=False)),  # padded, nothing else
        (100, dict(chunk_size=8, shared_qk=False, n_hashes=3)),
        (37, dict(chunk_size=4, n_hashes=4)),
        (64, dict(chunk_size=8, n_buckets=4)),  # explicit, few buckets: many repeated pairs
        (96, dict(chunk_size=8, n_buckets=32, shared_qk=False)),  # explicit, many buckets
        (256, dict()),  # defaults: c = 64, four chunks
    ],
)
@pytest.mark.parametrize(("unscaled", "per_round", "cross"), CONVENTIONS)
def test_matches_reference(n: int, params: dict, unscaled: bool, per_round: bool, cross: bool):
    be = backend(**params, **conventions(unscaled, per_round, cross))
    inputs = Inputs(batch=2, heads=2, seq_len=n, head_dim=16, seed=n)
    mask = assert_matches_reference(be, inputs, atol=1e-5, rtol=1e-5)
    c = be.params.chunk_size
    if math.ceil(n / c) > 2:  # beyond two chunks not every pair can meet
        assert not mask.all()


# bfloat16 keeps about 3 significant digits: its outputs of size ~0.3 are off by ~1e-2
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.bfloat16, 5e-2)])
def test_other_dtypes(dtype: torch.dtype, atol: float) -> None:
    be = backend(chunk_size=8, n_hashes=2)
    inputs = Inputs(batch=1, heads=2, seq_len=50, head_dim=16, dtype=dtype)
    q, k, v = inputs.make_qkv()
    out = be.prepare(inputs)(q, k, v)
    assert out.dtype == dtype
    ref = masked_attention(q, be.reference_keys(q, k), v, be.mask(inputs, q, k))
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=0)


@pytest.mark.parametrize(
    "n, params",
    [
        (40, dict(chunk_size=8, n_hashes=1)),
        (40, dict(chunk_size=8, n_hashes=1, shared_qk=False)),
        (45, dict(chunk_size=8, n_hashes=3)),  # padded
        (45, dict(chunk_size=4, n_hashes=2, shared_qk=False, n_buckets=6)),
        (6, dict(chunk_size=8, n_hashes=2)),  # one chunk
        (14, dict(chunk_size=8, n_hashes=3, n_buckets=2)),  # two chunks, padded
        (32, dict(chunk_size=4, n_hashes=2, buckets_per_chunk=1)),  # the count before issue 16
    ],
)
@pytest.mark.parametrize(("unscaled", "per_round", "cross"), CONVENTIONS)
def test_mask_and_pattern_follow_definition(n, params, unscaled, per_round, cross) -> None:
    """``mask`` and the closure's own attention probabilities equal the definition.

    With v the identity (D = N) the output row i is the attention distribution of query i, so
    the closure's pattern and weights are read off directly, without the backend's ``mask``:
    one softmax over the union, each pair counted once however many slots hold it (the paper),
    or, counted per round, ``softmax(s + log count)``; ``s = q . k / sqrt(D)`` or unscaled.
    """
    be = backend(**params, **conventions(unscaled, per_round, cross))
    inputs = Inputs(batch=1, heads=2, seq_len=n, head_dim=n, seed=3)
    q, k, _ = inputs.make_qkv()
    expected, counts = expected_pattern(inputs, be.params, q, k)
    assert torch.equal(be.mask(inputs, q, k).expand_as(expected), expected)

    v = torch.eye(n).expand(1, 2, n, n)
    probs = be.prepare(inputs)(q, k, v)  # [B, H, N, N]
    assert torch.equal(probs > 0, expected)
    keys = q / q.norm(dim=-1, keepdim=True) if be.params.shared_qk else k
    scores = (q @ keys.transpose(-1, -2)) / (1 if unscaled else math.sqrt(n))
    if per_round:
        scores = scores + counts.double().log().float()
    ref = scores.masked_fill(~expected, float("-inf")).softmax(dim=-1)
    torch.testing.assert_close(probs, ref, atol=1e-6, rtol=1e-5)
    if be.params.n_hashes > 1 and n > 8:  # meaningful: some pairs are met more than once
        assert (counts > 1).any()


def test_the_conventions_change_the_output() -> None:
    """Each convention changes what is computed (several rounds over several chunks)."""
    inputs = Inputs(batch=1, heads=2, seq_len=96, head_dim=16, seed=5)
    q, k, v = inputs.make_qkv()
    base = backend(chunk_size=8, n_hashes=3)
    out = base.prepare(inputs)(q, k, v)
    for option in ("unscaled_logits", "count_per_round", "look_back_across_rounds"):
        other = backend(chunk_size=8, n_hashes=3, **{option: True}).prepare(inputs)(q, k, v)
        assert (other - out).abs().max() > 1e-3, option
    cross = backend(chunk_size=8, n_hashes=3, look_back_across_rounds=True)
    assert not torch.equal(cross.mask(inputs, q, k), base.mask(inputs, q, k))
    fewer = backend(chunk_size=8, n_hashes=3, buckets_per_chunk=1)
    assert not torch.equal(fewer.mask(inputs, q, k), base.mask(inputs, q, k))


@pytest.mark.parametrize("shared_qk", [True, False])
def test_one_round_attends_own_and_previous_chunk(shared_qk: bool) -> None:
    """One round, c dividing N: every query sees exactly 2c keys (2c - 1 without itself)."""
    n, c = 64, 8
    be = backend(chunk_size=c, n_hashes=1, shared_qk=shared_qk)
    inputs = Inputs(batch=2, heads=2, seq_len=n, head_dim=16, seed=1)
    q, k, _ = inputs.make_qkv()
    mask = be.mask(inputs, q, k)
    assert (mask.sum(dim=-1) == 2 * c - shared_qk).all()
    # each key is seen by exactly the 2c queries of its chunk and the next one
    assert (mask.sum(dim=-2) == 2 * c - shared_qk).all()


@pytest.mark.parametrize("n", [1, 2, 30])
def test_shared_qk_no_self_unless_alone(n: int) -> None:
    be = backend(chunk_size=4, n_hashes=2)
    inputs = Inputs(batch=1, heads=2, seq_len=n, head_dim=8)
    q, k, _ = inputs.make_qkv()
    diag = be.mask(inputs, q, k).expand(1, 2, n, n).diagonal(dim1=-2, dim2=-1)
    assert diag.all() if n == 1 else not diag.any()


@pytest.mark.parametrize("shared_qk", [True, False])
def test_union_grows_with_rounds(shared_qk: bool) -> None:
    inputs = Inputs(batch=1, heads=2, seq_len=96, head_dim=16, seed=2)
    q, k, _ = inputs.make_qkv()
    masks = [
        backend(chunk_size=8, n_hashes=r, shared_qk=shared_qk).mask(inputs, q, k) for r in (1, 2, 4)
    ]
    for fewer, more in itertools.pairwise(masks):
        assert not (fewer & ~more).any()  # weakly larger
        assert (more & ~fewer).any()  # and here strictly
    assert masks[-1].dtype == torch.bool


@pytest.mark.parametrize("params", [dict(n_hashes=1), dict(n_hashes=3, shared_qk=False)])
def test_repeatable(params: dict) -> None:
    """Two calls, and a fresh ``prepare``, give the same output: no state leaks between calls."""
    be = backend(chunk_size=8, **params)
    inputs = Inputs(batch=1, heads=1, seq_len=45, head_dim=8)
    q, k, v = inputs.make_qkv()
    fn = be.prepare(inputs)
    first = fn(q, k, v)
    assert torch.equal(fn(q, k, v), first)
    assert torch.equal(be.prepare(inputs)(q, k, v), first)
    small = Inputs(batch=1, heads=1, seq_len=5, head_dim=8)
    fn = be.prepare(small)
    assert torch.equal(fn(*small.make_qkv()), fn(*small.make_qkv()))


def test_mask_rows_subset() -> None:
    be = backend(chunk_size=8, n_hashes=3, shared_qk=True)
    inputs = Inputs(batch=2, heads=2, seq_len=50, head_dim=16)
    q, k, _ = inputs.make_qkv()
    rows = torch.tensor([0, 7, 8, 31, 49])
    full = be.mask(inputs, q, k)
    assert torch.equal(be.mask(inputs, q, k, rows), full[:, :, rows])


def test_reference_keys() -> None:
    q, k = torch.randn(2, 1, 2, 5, 4)
    torch.testing.assert_close(backend().reference_keys(q, k), q / q.norm(dim=-1, keepdim=True))
    assert backend(shared_qk=False).reference_keys(q, k) is k
    # unscaled: times sqrt(D), so that the reference's 1/sqrt(D) leaves q . q / ||q||
    unscaled = backend(unscaled_logits=True).reference_keys(q, k)
    torch.testing.assert_close(unscaled, 2 * q / q.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize(("unscaled", "per_round", "cross"), CONVENTIONS)
def test_memory_stays_linear(unscaled: bool, per_round: bool, cross: bool) -> None:
    n = 2048
    be = backend(chunk_size=16, n_hashes=2, **conventions(unscaled, per_round, cross))
    inputs = Inputs(batch=1, heads=2, seq_len=n, head_dim=16, requires_grad=True)
    largest = largest_intermediate(be, inputs)
    assert largest < n * n / 4
    # the chunk scores B H R N 2c are the largest thing expected
    assert largest <= 1 * 2 * 2 * n * 2 * 16


@pytest.mark.parametrize(
    "params, error",
    [
        (dict(n_hashes=0), "n_hashes"),
        (dict(chunk_size=1), "chunk_size"),
        (dict(n_buckets=7), "n_buckets"),
        (dict(n_buckets=0), "n_buckets"),
        (dict(n_buckets=2 * 10**9), "more than the 1024 positions"),
        (dict(chunk_size=2 * 10**9), "exceeds the sequence length"),
        (dict(n_hashes=10**6), "at most 64"),
        (dict(buckets_per_chunk=0), "buckets_per_chunk must be >= 1"),
        (dict(buckets_per_chunk=65), "more buckets than positions"),
    ],
)
def test_param_errors(params: dict, error: str) -> None:
    errors = backend(**params).param_errors(1024)
    assert len(errors) == 1 and error in errors[0]
    inputs = Inputs(batch=1, heads=1, seq_len=1024, head_dim=8)
    assert any(error in r for r in backend(**params).not_supported_reasons(inputs))


def test_valid_params_and_support() -> None:
    assert backend().param_errors(1024) == []
    assert backend(n_buckets=2, chunk_size=2, n_hashes=1).param_errors(3) == []
    assert backend().not_supported_reasons(Inputs(1, 2, 128, 16, requires_grad=True)) == []
    assert backend().not_supported_reasons(Inputs(1, 2, 128, 16, device="meta"))
    assert get_backend_class("reformer") is Reformer and Reformer.is_sparse


def test_derived_buckets_and_estimate() -> None:
    # the paper's 2 N / c by default (HF's too where N / c is a power of two), N / c with K = 1
    assert num_buckets(ReformerParams(chunk_size=64), 4096) == 128
    assert num_buckets(ReformerParams(chunk_size=64, buckets_per_chunk=1), 4096) == 64
    assert num_buckets(ReformerParams(chunk_size=64), 10) == 2
    assert num_buckets(ReformerParams(n_buckets=6), 4096) == 6
    assert num_buckets(ReformerParams(n_buckets=6, buckets_per_chunk=1), 4096) == 6
    inputs = Inputs(batch=1, heads=3, seq_len=1000, head_dim=8)
    assert rotations(inputs, ReformerParams(chunk_size=50, n_hashes=2)).shape == (3, 8, 2, 20)
    be = backend()
    grad, plain = Inputs(1, 4, 4096, 64, requires_grad=True), Inputs(1, 4, 4096, 64)
    assert be.estimate_bytes(Inputs(1, 4, 8192, 64)) == 2 * be.estimate_bytes(plain)
    rows = 4 * 4 * 4096 * 64 * 4  # [B, H, R, Np, D] float32, 4 rounds
    scores, vec, tables = 2 * rows, rows // 4, 6 * 4 * 4 * 4096 * 8  # chunk scores: 2c = 2D
    # forward: scores, gathered q, keys, values (five rows), two output rows, the unit keys and
    # the merged output
    assert be.estimate_bytes(plain) == scores + 7 * rows + 2 * vec + tables
    # backward: five score-sized tensors in the exponential's gradient (autograd's CopySlices
    # of the in-place scores), gathered q and keys and dv
    assert be.estimate_bytes(grad) == 5 * scores + 5 * rows + vec + tables
    one = backend(n_hashes=1)  # no count bias: scores out of place, three score-sized
    rows1, scores1 = rows // 4, scores // 4
    expected = max(scores1 + 11 * rows1, 3 * scores1 + 5 * rows1) + vec + tables // 4
    assert one.estimate_bytes(grad) == expected


def test_hashing_in_slices_gives_the_same_buckets():
    inputs = Inputs(2, 3, 300, 16, seed=9)
    q, _, _ = inputs.make_qkv()
    rot = rotations(inputs, ReformerParams(n_hashes=2, n_buckets=8))
    whole = lsh_buckets(q, rot, max_elements=10**9)
    assert whole.shape == (2, 3, 2, 300) and whole.unique().numel() > 4
    assert torch.equal(lsh_buckets(q, rot, max_elements=4 * 7), whole)  # slices of 7 tokens


@pytest.mark.parametrize(("n", "c", "rounds"), [(64, 8, 3), (96, 16, 2), (128, 16, 4)])
def test_hf_conventions_equal_huggingface(monkeypatch, n: int, c: int, rounds: int) -> None:
    """HF's ``LSHSelfAttention`` (transformers) with our rotations: the reformer with
    ``--unscaled-logits --count-per-round --look-back-across-rounds`` and the default 2N/c
    buckets computes what it computes, to float32 rounding; the paper's defaults do not."""
    modeling = pytest.importorskip("transformers.models.reformer.modeling_reformer")
    from transformers import ReformerConfig

    heads, d = 2, 8
    params = ReformerParams(n_hashes=rounds, chunk_size=c, unscaled_logits=True,
                            count_per_round=True, look_back_across_rounds=True)  # fmt: skip
    inputs = Inputs(1, heads, n, d, seed=n)
    buckets = num_buckets(params, n)
    assert buckets == 2 * n // c  # HF's default too (a power of two here)
    config = ReformerConfig(hidden_size=2 * heads * d, num_attention_heads=heads,
                            attention_head_size=d, num_hashes=rounds, num_buckets=buckets,
                            lsh_attn_chunk_length=c, lsh_attention_probs_dropout_prob=0.0,
                            is_decoder=False)  # fmt: skip
    layer = modeling.LSHSelfAttention(config, layer_idx=0).eval()
    eye = torch.eye(heads * d)
    with torch.no_grad():  # hidden states [q | v]: query_key reads q, value reads v
        layer.query_key.weight.copy_(torch.cat([eye, torch.zeros_like(eye)], dim=1))
        layer.value.weight.copy_(torch.cat([torch.zeros_like(eye), eye], dim=1))
    q, _, v = inputs.make_qkv()
    hidden = torch.cat([q.transpose(1, 2).flatten(2), v.transpose(1, 2).flatten(2)], dim=-1)
    rot = rotations(inputs, params)  # [H, D, R, buckets / 2], HF's layout
    with torch.no_grad(), monkeypatch.context() as patch:  # HF draws them with torch.randn
        patch.setattr(torch, "randn", lambda *args, **kwargs: rot.clone())
        hf = layer(hidden).hidden_states  # [B, N, H*D]
    hf = hf.view(1, n, heads, d).transpose(1, 2)  # [B, H, N, D]
    ours = Reformer(params).prepare(inputs)(q, q, v)
    torch.testing.assert_close(ours, hf, atol=1e-5, rtol=1e-5)
    paper = Reformer(ReformerParams(n_hashes=rounds, chunk_size=c)).prepare(inputs)(q, q, v)
    assert (paper - hf).abs().max() > 1e-3


def test_rotations_are_not_the_inputs_random_numbers():
    """The rotations come from a stream of their own: drawn from the inputs' seed itself, the
    first rotation column was q's first row, so head 0 hashed q[0, 0, 0] against itself."""
    inputs = Inputs(1, 2, 64, 8, seed=5)
    q, _, _ = inputs.make_qkv()
    rot = rotations(inputs, ReformerParams(n_hashes=1, n_buckets=2))  # [H, D, 1, 1]
    assert not torch.allclose(rot[0, :, 0, 0], q[0, 0, 0])
