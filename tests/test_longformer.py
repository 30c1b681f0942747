"""Longformer backend: output and gradients against the dense masked reference, the mask against
the paper's definition (Beltagy et al., 2020, section 3.1), memory, and parameter checks."""

from __future__ import annotations

import pytest
import torch

from attention_impls.footprint import cpu_flash_buffers_bytes
from attention_impls.longformer import Longformer, LongformerParams
from harness.measure.inputs import Inputs
from harness.measure.reference import masked_attention
from harness.measure.registry import get_backend_class
from tests.backend_checks import assert_matches_reference, largest_intermediate


def make(**params) -> Longformer:
    return Longformer(LongformerParams(**params))


def paper_mask(
    n: int,
    window: int,
    dilation: int = 1,
    global_tokens: tuple[int, ...] = (),
    causal: bool = False,
) -> torch.Tensor:
    """The pattern written out pair by pair from its definition (small n only)."""
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for t in range(-window, window + 1):
            if 0 <= i + dilation * t < n:
                mask[i, i + dilation * t] = True
    for g in global_tokens:
        mask[g, :] = True  # negative g counts from the end, as Python indexing does
        mask[:, g] = True
    if causal:
        mask &= torch.ones(n, n, dtype=torch.bool).tril()
    return mask


# (seq_len, window, dilation, global_tokens, causal). Lengths 17, 100 and 257 are not multiples
# of the block size or of the dilation, so padded keys and dropped query rows are exercised.
CASES = [
    (17, 4, 1, (), False),
    (17, 4, 1, (), True),
    (17, 16, 1, (), False),  # w = N - 1: the window covers everything
    (17, 16, 1, (0,), True),
    (17, 3, 1, (0, -17, 3, 3), True),  # duplicates, also through a negative index
    (64, 8, 1, (), False),  # N a multiple of w: no padding
    (64, 8, 2, (0, -1), False),
    (64, 8, 3, (0, 31, -1), True),
    (64, 63, 2, (-1,), False),  # window longer than a dilation class
    (100, 7, 2, (), True),
    (100, 7, 3, (0, 50, -1), False),
    (100, 5, 3, (), False),
    (33, 5, 40, (), False),  # dilation beyond N: each query sees only itself
    (257, 16, 1, (0, -1), False),
    (257, 16, 2, (5,), True),
    (257, 10, 3, (0, 128, -1), True),
]


@pytest.mark.parametrize(("n", "window", "dilation", "global_tokens", "causal"), CASES)
def test_matches_reference(n, window, dilation, global_tokens, causal):
    backend = make(window=window, dilation=dilation, global_tokens=global_tokens, causal=causal)
    mask = assert_matches_reference(backend, Inputs(2, 2, n, 16, seed=n))
    expected = paper_mask(n, window, dilation, global_tokens, causal)
    assert torch.equal(mask[0, 0], expected)


def test_matches_reference_float64():
    backend = make(window=6, dilation=2, global_tokens=(0, 20), causal=True)
    assert_matches_reference(backend, Inputs(1, 2, 45, 8, dtype=torch.float64), 1e-10, 1e-10)


def test_closure_reusable_on_new_values():
    inputs = Inputs(1, 2, 50, 8)
    backend = make(window=4, dilation=2, global_tokens=(7,))
    fn = backend.prepare(inputs)
    for seed in (1, 2):
        q, k, v = Inputs(**{**inputs.__dict__, "seed": seed}).make_qkv()
        ref = masked_attention(q, k, v, backend.mask(inputs, q, k), compute_dtype=q.dtype)
        torch.testing.assert_close(fn(q, k, v), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("n", "window", "dilation", "global_tokens", "causal"),
    [
        (40, 3, 1, (), False),
        (40, 3, 2, (1, -2), True),
        (61, 2, 4, (30,), False),
        (9, 8, 1, (), True),
    ],
)
def test_mask_matches_definition(n, window, dilation, global_tokens, causal):
    backend = make(window=window, dilation=dilation, global_tokens=global_tokens, causal=causal)
    inputs = Inputs(1, 1, n, 4)
    q, k, _ = inputs.make_qkv()
    mask = backend.mask(inputs, q, k)
    assert mask.dtype == torch.bool and mask.shape == (1, 1, n, n)
    assert torch.equal(mask[0, 0], paper_mask(n, window, dilation, global_tokens, causal))


def test_mask_rows_select_rows():
    backend = make(window=3, dilation=2, global_tokens=(0, -1), causal=True)
    inputs = Inputs(1, 1, 30, 4)
    q, k, _ = inputs.make_qkv()
    rows = torch.tensor([29, 0, 14, 3])
    assert torch.equal(
        backend.mask(inputs, q, k, rows)[0, 0], backend.mask(inputs, q, k)[0, 0, rows]
    )


@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_middle_row_sees_its_dilated_window(dilation, causal):
    n, window, i = 200, 5, 100
    inputs = Inputs(1, 1, n, 4)
    q, k, _ = inputs.make_qkv()
    row = make(window=window, dilation=dilation, causal=causal).mask(inputs, q, k)[0, 0, i]
    assert int(row.sum()) == (window + 1 if causal else 2 * window + 1)
    lowest = i - dilation * window
    highest = i if causal else i + dilation * window
    assert row.nonzero().flatten().tolist() == list(range(lowest, highest + 1, dilation))


@pytest.mark.parametrize("causal", [False, True])
def test_global_rows_and_columns(causal):
    n, positions = 50, (0, 25, 49)
    inputs = Inputs(1, 1, n, 4)
    q, k, _ = inputs.make_qkv()
    mask = make(window=2, global_tokens=(0, 25, -1), causal=causal).mask(inputs, q, k)[0, 0]
    for g in positions:
        if causal:
            assert mask[g, : g + 1].all() and not mask[g, g + 1 :].any()
            assert mask[g:, g].all() and not mask[:g, g].any()
        else:
            assert mask[g, :].all() and mask[:, g].all()
    # Row 10: its window (3 or 5 keys) plus the global keys 0 (causal) or 0, 25 and 49.
    assert int(mask[10].sum()) == (3 + 1 if causal else 5 + 3)


@pytest.mark.parametrize(
    "params",
    [
        {"window": 16, "global_tokens": (0, -1)},
        {"window": 8, "dilation": 3, "global_tokens": (100,), "causal": True},
    ],
)
def test_no_quadratic_intermediate(params):
    n = 2048
    largest = largest_intermediate(make(**params), Inputs(1, 1, n, 16, requires_grad=True))
    assert 0 < largest < n * n // 4


@pytest.mark.parametrize(
    ("params", "n", "fragment"),
    [
        ({"window": 0}, 64, "window 0 must be at least 1"),
        ({"window": 64}, 64, "window 64 must be smaller than the length 64"),
        ({"window": 100}, 64, "must be smaller than the length"),
        ({"dilation": 0, "window": 4}, 64, "dilation 0 must be at least 1"),
        ({"window": 4, "global_tokens": (0, 64)}, 64, "global tokens [64] out of range"),
        ({"window": 4, "global_tokens": (-65,)}, 64, "global tokens [-65] out of range"),
        ({"window": 8, "dilation": 8}, 64, "dilation 8 x window 8, must be shorter than"),
        ({"window": 8, "dilation": 10**20}, 64, "must be shorter than the length 64"),
    ],
)
def test_param_errors(params, n, fragment):
    errors = make(**params).param_errors(n)
    assert len(errors) == 1 and fragment in errors[0]


@pytest.mark.parametrize("params", [{"window": 63, "global_tokens": (0, -64, 63)}, {"window": 1}])
def test_valid_params_have_no_errors(params):
    assert make(**params).param_errors(64) == []


def test_not_supported_reasons():
    backend = make(window=4)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        assert backend.not_supported_reasons(Inputs(1, 1, 64, 8, dtype=dtype)) == []
    assert backend.not_supported_reasons(Inputs(1, 1, 64, 8, requires_grad=True)) == []
    reasons = backend.not_supported_reasons(Inputs(1, 1, 64, 8, device="mps"))
    assert len(reasons) == 1 and "device mps" in reasons[0]


def test_registered():
    cls = get_backend_class("longformer")
    assert cls is Longformer and cls.is_sparse and cls.family == "longformer"
    assert LongformerParams() == LongformerParams(256, 1, (), False)


def test_estimate_bytes_scales_with_window_and_grad():
    inputs, grad = Inputs(2, 4, 4096, 64), Inputs(2, 4, 4096, 64, requires_grad=True)
    vec = 2 * 4 * 4096 * 64 * 4  # [B, H, N, D] float32
    slots = vec * 3  # window 64: 3w key slots per query block, for k or for v

    def mask(w: int, g: int = 0) -> int:  # SDPA's float copy of the mask [N, 3w + G]
        return 4096 * (3 * w + g) * 4

    def tiles(w: int, backward: bool, g: int = 0) -> int:
        return cpu_flash_buffers_bytes(w, 3 * w + g, 64, backward)

    # forward: k's and v's slots, the float mask, the output, the fused kernel's tiles
    small = make(window=64).estimate_bytes(inputs)
    assert small == 2 * slots + mask(64) + vec + tiles(64, False)
    # backward: the saved slots and their gradients, q, the output, its gradient, its copy, dq
    assert make(window=64).estimate_bytes(grad) == 4 * slots + mask(64) + 5 * vec + tiles(64, True)
    # the slots hold 3 rows per token whatever the window; the mask grows with it
    large = make(window=256).estimate_bytes(inputs)
    assert large - small == mask(256) - mask(64) + tiles(256, False) - tiles(64, False)
    # dilation 2 adds q's class-major copy
    assert make(window=64, dilation=2).estimate_bytes(inputs) == small + vec
    # global tokens: two more key slots per query block, and the dense rows' scores
    with_globals = make(window=64, global_tokens=(0, 1)).estimate_bytes(inputs)
    global_slots = 2 * 4 * 64 * 2 * 64 * 4  # [B, H, nb, G, D]: G more slots per block
    dense = 2 * 4 * 2 * 4096 * 4  # [B, H, G, N]: the global rows' scores, then their softmax
    extra = 2 * global_slots + mask(64, 2) - mask(64) + tiles(64, False, 2) - tiles(64, False)
    assert with_globals == small + extra + 2 * dense


@pytest.mark.cuda
def test_matches_reference_cuda():
    backend = make(window=8, dilation=2, global_tokens=(0, -1), causal=True)
    # Looser: GPU kernels reduce in other orders than the dense reference's matmul.
    assert_matches_reference(backend, Inputs(2, 2, 100, 16, device="cuda"), 1e-4, 1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_random_small_configs(seed):
    gen = torch.Generator().manual_seed(seed)

    def pick(high: int) -> int:
        return int(torch.randint(high, (), generator=gen))

    for _ in range(8):
        n = 2 + pick(39)
        dilation = [1, 2, 3, 5, n, n + 7][pick(6)]
        global_tokens = tuple(pick(2 * n) - n for _ in range(pick(4)))
        params = {"window": 1 + pick(n - 1), "dilation": dilation, "causal": bool(pick(2))}
        backend = make(**params, global_tokens=global_tokens)
        # a dilated window reaching past the sequence is refused by the sweep, but computed
        reaches_past = dilation > 1 and dilation * params["window"] >= n
        assert bool(backend.param_errors(n)) == reaches_past
        assert_matches_reference(backend, Inputs(1, 1, n, 4, seed=n), 1e-5, 1e-5)
