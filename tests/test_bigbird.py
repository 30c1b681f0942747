"""Tests of the BigBird backend: output and gradients against the dense masked reference, the mask
against the paper's block pattern (recomputed here, not with the backend's helpers), random plans
per head (and one shared plan, as before issue 16), O(N) memory, pair counts, parameter checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attention_impls.bigbird import BigBird, BigBirdParams, random_block_table
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from tests.backend_checks import assert_matches_reference, largest_intermediate

# (N, block_size, global_blocks, random_blocks): multiples of b and not, g = 0, 1, 2, r = 0, r
# beyond the available blocks, nb <= 2g (dense), pure window, two blocks only.
CASES = [
    (256, 16, 1, 3),
    (100, 16, 1, 3),
    (256, 16, 0, 2),
    (200, 16, 2, 1),
    (160, 16, 1, 0),
    (128, 16, 1, 20),
    (64, 16, 2, 3),
    (40, 16, 2, 1),
    (37, 5, 0, 0),
    (17, 16, 0, 3),
    (1000, 32, 1, 3),
]


def _backend(b: int, g: int, r: int, shared: bool = False) -> BigBird:
    return BigBird(
        BigBirdParams(block_size=b, global_blocks=g, random_blocks=r, shared_plan=shared)
    )


def block_pattern(mask: torch.Tensor, n: int, b: int) -> torch.Tensor:
    """The ``[nb, nb]`` block-level pattern of an ``[N, N]`` mask, asserting every block pair is
    either fully attended or not at all (over its real positions)."""
    nb = math.ceil(n / b)
    pad = nb * b - n
    counts = F.pad(mask.long(), (0, pad, 0, pad)).view(nb, b, nb, b).sum(dim=(1, 3))
    sizes = torch.full((nb,), b)
    sizes[-1] = n - (nb - 1) * b
    full = sizes[:, None] * sizes[None, :]
    assert ((counts == 0) | (counts == full)).all(), "mask is not block-structured"
    return counts == full


def check_paper_pattern(blocks: torch.Tensor, g: int, r: int) -> None:
    """Window, global and exactly min(r, available) random blocks per non-global query block."""
    nb = blocks.shape[0]
    idx = torch.arange(nb)
    is_global = (idx < g) | (idx >= nb - g)
    window = (idx[:, None] - idx[None, :]).abs() <= 1
    assert blocks[window].all(), "window blocks missing"
    assert blocks[is_global].all(), "global query blocks must attend every key block"
    assert blocks[:, is_global].all(), "every query block must attend the global blocks"
    for i in range(nb):
        if is_global[i]:
            continue
        candidates = ~is_global & ~window[i]
        extra = blocks[i] & candidates
        assert extra.sum() == min(r, int(candidates.sum())), f"query block {i}: {extra.tolist()}"


def plans_can_differ(n: int, b: int, g: int, r: int) -> bool:
    """Whether some query block has more candidates than ``r`` (else every plan takes them all):
    the first non-global block's window has two non-global blocks, leaving ``nq - 2``."""
    nq = math.ceil(n / b) - 2 * g
    return r > 0 and nq - 2 > r


@pytest.mark.parametrize(("n", "b", "g", "r"), CASES)
@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("shared", [False, True])
def test_matches_reference(n: int, b: int, g: int, r: int, seed: int, shared: bool) -> None:
    backend = _backend(b, g, r, shared)
    inputs = Inputs(batch=2, heads=3, seq_len=n, head_dim=8, seed=seed)
    mask = assert_matches_reference(backend, inputs, atol=1e-5, rtol=1e-5)
    assert mask.shape == (2, 3, n, n)
    assert (mask == mask[:1]).all(), "the plans are shared by the batch"
    same_heads = bool((mask == mask[:, :1]).all())
    assert same_heads == (shared or not plans_can_differ(n, b, g, r))


@pytest.mark.parametrize(("n", "b", "g", "r"), [*CASES, (4096, 64, 1, 3), (2048, 16, 2, 5)])
def test_mask_follows_paper_pattern(n: int, b: int, g: int, r: int) -> None:
    heads = 3
    inputs = Inputs(batch=1, heads=heads, seq_len=n, head_dim=4, seed=3)
    q = torch.zeros(inputs.shape)
    masks = _backend(b, g, r).mask(inputs, q, q)
    assert masks.shape == (1, heads, n, n)
    for mask in masks[0]:  # every head's plan follows the paper's pattern
        blocks = block_pattern(mask, n, b)
        check_paper_pattern(blocks, g, r)
        if math.ceil(n / b) <= 2 * g:
            assert mask.all(), "nb <= 2g must be dense"
        elif n >= 1000:
            assert mask.float().mean() < 0.5, "a long sequence must be sparse"


@pytest.mark.parametrize(("n", "b", "g", "r"), [(1000, 32, 1, 3), (100, 16, 0, 2)])
def test_mask_rows_subset(n: int, b: int, g: int, r: int) -> None:
    inputs = Inputs(batch=1, heads=1, seq_len=n, head_dim=4, seed=5)
    q = torch.zeros(inputs.shape)
    backend = _backend(b, g, r)
    rows = torch.tensor([0, 1, 33, 47, 70, n - 1])
    full = backend.mask(inputs, q, q).expand(1, 1, n, n)
    part = backend.mask(inputs, q, q, rows)
    assert part.shape[-2:] == (rows.numel(), n)
    assert torch.equal(part.expand(1, 1, rows.numel(), n), full[:, :, rows])


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("shared", [False, True])
def test_random_blocks_depend_on_seed(heads: int, shared: bool) -> None:
    n, backend = 1024, _backend(16, 1, 3, shared)
    q = torch.zeros(1, heads, n, 4)
    masks = [backend.mask(Inputs(1, heads, n, 4, seed=s), q, q) for s in (0, 0, 1)]
    assert torch.equal(masks[0], masks[1]), "same seed, same random blocks"
    assert not torch.equal(masks[0], masks[2]), "different seeds, different random blocks"
    again = _backend(16, 1, 3, shared).mask(Inputs(1, heads, n, 4, seed=0), q, q)
    assert torch.equal(masks[0], again), "the draw must not depend on the instance"


def test_a_plan_per_head() -> None:
    """Per head (the default): each head draws its own plan, all different here, and
    reproducibly; one shared plan is the same for every head, and is the one plan of a single
    head."""
    n, heads, params = 1024, 8, BigBirdParams(block_size=16)
    tables = random_block_table(n, params, seed=3, heads=heads)  # [H, nq, r]
    assert tables.shape == (heads, 64 - 2, 3)
    assert torch.equal(tables, random_block_table(n, params, seed=3, heads=heads))
    assert len({tuple(t.flatten().tolist()) for t in tables}) == heads, "plans must differ"
    shared = random_block_table(n, params, seed=3)  # [nq, r]
    assert torch.equal(random_block_table(n, params, seed=3, heads=1)[0], shared)
    q = torch.zeros(1, heads, n, 4)
    inputs = Inputs(1, heads, n, 4, seed=3)
    per_head = BigBird(params).mask(inputs, q, q)  # [1, H, N, N]
    one = BigBird(BigBirdParams(block_size=16, shared_plan=True)).mask(inputs, q, q)
    assert per_head.shape == (1, heads, n, n) and one.shape == (1, 1, n, n)
    assert torch.equal(per_head[0, 0], one[0, 0]), "head 0's plan is the shared plan"
    assert all(not torch.equal(per_head[0, 0], per_head[0, h]) for h in range(1, heads))
    # more heads draw further plans; the first heads' plans stay the same
    assert torch.equal(random_block_table(n, params, seed=3, heads=2), tables[:2])


def test_shared_plan_is_the_plan_before_issue_16() -> None:
    """``--shared-random-plan`` draws exactly what the one-plan code drew (its tables, stored
    from commit 9d1c589 in tests/data/bigbird_shared_plans.json)."""
    stored = json.loads((Path(__file__).parent / "data" / "bigbird_shared_plans.json").read_text())
    assert len(stored["plans"]) >= 4
    for case in stored["plans"]:
        b, g, r = case["block_size"], case["global_blocks"], case["random_blocks"]
        params = BigBirdParams(b, g, r, shared_plan=True)
        table = random_block_table(case["seq_len"], params, case["seed"])
        assert table.tolist() == case["table"], case["seq_len"]


def test_random_blocks_uniform() -> None:
    # Query block 5 of nb = 12 (g = 1): candidates are blocks 1..3 and 7..10, 7 of them; with
    # r = 3 each is picked with probability 3/7. 3000 draws: standard deviation of a frequency
    # is about 0.009, the bound 0.04 is over 4 of them.
    params = BigBirdParams(block_size=4, global_blocks=1, random_blocks=3)
    row = torch.stack([random_block_table(48, params, s)[5 - 1] for s in range(3000)])  # [S, r]
    assert (row.sort(dim=1).values.diff(dim=1) > 0).all(), "drawn without replacement"
    freq = torch.bincount(row.flatten(), minlength=12).double() / 3000
    candidates = [1, 2, 3, 7, 8, 9, 10]
    assert (freq[candidates] - 3 / 7).abs().max() < 0.04, freq
    assert freq.sum() == pytest.approx(3.0)


def test_padded_keys_do_not_leak() -> None:
    # N = 100, b = 16: the last block has 4 real and 12 padded positions, padded with zeros. With
    # v = 1 at every real position, any weight given to a padded key pulls an output below 1.
    inputs = Inputs(batch=1, heads=2, seq_len=100, head_dim=8, seed=2)
    q, k, _ = inputs.make_qkv()
    v = torch.ones(inputs.shape)
    out = _backend(16, 1, 3).prepare(inputs)(q, k, v)
    torch.testing.assert_close(out, torch.ones_like(out), atol=1e-6, rtol=0)


def test_non_contiguous_inputs() -> None:
    inputs = Inputs(batch=2, heads=2, seq_len=100, head_dim=8, seed=4)
    q, k, v = inputs.make_qkv()
    fn = _backend(16, 1, 2).prepare(inputs)
    swapped = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]  # [B, H, N, D]
    assert not swapped[0].is_contiguous()
    torch.testing.assert_close(fn(*swapped), fn(q, k, v))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype: torch.dtype) -> None:
    backend = _backend(16, 1, 3)
    if dtype == torch.float64:
        assert_matches_reference(backend, Inputs(1, 2, 200, 8, dtype=dtype), atol=1e-10, rtol=1e-10)
        return
    inputs = Inputs(1, 2, 200, 8, dtype=dtype)
    out = backend.prepare(inputs)(*inputs.make_qkv())
    ref_inputs = Inputs(1, 2, 200, 8)
    ref = backend.prepare(ref_inputs)(*(t.float() for t in inputs.make_qkv()))
    assert out.dtype == dtype
    # bfloat16 keeps 8 mantissa bits: outputs of magnitude ~1 agree to a few 1e-2.
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize(
    ("heads", "kv_heads", "shared"),
    [(1, None, False), (2, None, False), (4, 2, False), (4, 2, True)],
)
def test_memory_is_linear(requires_grad: bool, heads: int, kv_heads: int | None, shared: bool):
    n = 2048
    inputs = Inputs(1, heads, n, 16, requires_grad=requires_grad, kv_heads=kv_heads)
    largest = largest_intermediate(_backend(16, 1, 2, shared), inputs)
    assert largest < n * n / 4, largest


# (N, b, g, r): g = 0 with a short last block, the only case where plans differ in their count
@pytest.mark.parametrize(("n", "b", "g", "r"), [(103, 8, 0, 3), (70, 7, 0, 3), (1000, 32, 0, 3),
                                                (1000, 32, 1, 3), (100, 16, 2, 1)])  # fmt: skip
@pytest.mark.parametrize("shared", [False, True])
def test_pairs_are_the_mask_per_head(n: int, b: int, g: int, r: int, shared: bool) -> None:
    """``attended_pairs`` (and the case's count) is exactly the mask's pairs per (batch, head):
    with a plan per head, their mean over the heads."""
    heads, backend = 6, _backend(b, g, r, shared)
    for seed in range(4):
        inputs = Inputs(1, heads, n, 4, seed=seed)
        q = torch.zeros(inputs.shape)
        mask = backend.mask(inputs, q, q).expand(1, heads, n, n)
        per_head = mask.sum(dim=(-1, -2)).double()  # [1, H]
        assert backend.attended_pairs(n, seed, heads) == pytest.approx(per_head.mean().item())
        assert backend.case_pairs(inputs) == backend.attended_pairs(n, seed, heads)
        if not shared:  # head 0's plan is the one plan of a single head
            assert backend.attended_pairs(n, seed) == per_head[0, 0].item()


def test_param_errors() -> None:
    assert _backend(64, 1, 3).param_errors(4096) == []
    assert _backend(100, 0, 0).param_errors(100) == []
    assert any("block_size" in e for e in _backend(0, 1, 3).param_errors(100))
    assert any("block_size" in e for e in _backend(128, 1, 3).param_errors(100))
    assert any("global_blocks" in e for e in _backend(16, -1, 3).param_errors(100))
    assert any("random_blocks" in e for e in _backend(16, 1, -2).param_errors(100))
    assert len(_backend(-1, -1, -1).param_errors(100)) == 3
    assert any("not that many" in e for e in _backend(16, 1, 10**9).param_errors(1024))
    assert any("more than the 64 blocks" in e for e in _backend(16, 10**9, 3).param_errors(1024))


def test_not_supported_reasons() -> None:
    backend = BigBird()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        assert backend.not_supported_reasons(Inputs(1, 1, 256, 8, dtype=dtype)) == []
    assert backend.not_supported_reasons(Inputs(1, 1, 256, 8, requires_grad=True)) == []
    reasons = backend.not_supported_reasons(Inputs(1, 1, 256, 8, device="meta"))
    assert any("device" in r for r in reasons)


def test_registered_and_estimate(monkeypatch) -> None:
    assert get_backend_class("bigbird") is BigBird
    assert BigBird.is_sparse and BigBird.family == "bigbird"
    backend = BigBird()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the CPU flash tiles: per thread
    small, large = (backend.estimate_bytes(Inputs(1, 4, n, 64)) for n in (4096, 8192))
    assert large == pytest.approx(2 * small, rel=0.02), "the estimate must grow linearly with N"
    vec, nq, slots = 4 * 4096 * 64 * 4, 4096 // 64 - 2, 2 + 3 + 3
    blocks, mid = vec * nq * slots // 64, vec * nq // 64  # gathered k (or v) blocks; output
    # forward: both gathered blocks, the middle output, the global rows (query copy, output)
    # and the concatenated output; the flash kernel's tiles (of 32 of the 64 queries, 512 keys)
    tiles = (32 * 512 + 2 * 32 + 32 * 64) * 4
    assert small == 2 * blocks + mid + 2 * (vec * 2 // 64) + vec + tiles
    # backward: the blocks and their gradients, mid, its gradient and dq, output and gradient,
    # the global rows' dk and dv
    grad = backend.estimate_bytes(Inputs(1, 4, 4096, 64, requires_grad=True))
    assert grad == 4 * blocks + 3 * mid + 4 * vec + 2 * 32 * 512 * 4
    assert small < 4096 * 4096 * 4 * 4
    # every block global: dense fused SDPA, no [B, H, N, N] scores
    dense = BigBird(BigBirdParams(block_size=64, global_blocks=32))
    assert dense.estimate_bytes(Inputs(1, 4, 4096, 64)) < 2 * vec
    # grouped-query attention: a plan per head gathers the blocks per query head (4 here), one
    # shared plan per key/value head (1): the gathered blocks are a quarter
    gqa = Inputs(1, 4, 4096, 64, kv_heads=1)
    one = BigBird(BigBirdParams(shared_plan=True)).estimate_bytes(gqa)
    assert backend.estimate_bytes(gqa) - one == 2 * blocks - 2 * (blocks // 4)
