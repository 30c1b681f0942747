"""xformers backends: reasons read from xformers where it cannot run (CPU, no xformers), the
window bias against the Longformer mask, the closure's layout and bias wiring through a
reference stand-in for the kernel, the window kernel's narrowed parameters and the pattern it
holds, and on CUDA the real kernels against the dense reference."""

from __future__ import annotations

import builtins
import dataclasses
import pickle

import pytest
import torch

import attention_impls.xformers_ops as xops
from attention_impls.full import FullNaive, XformersFull, causal_mask
from attention_impls.longformer import Longformer, LongformerParams, XformersLongformer
from harness.measure.backend import AttentionBackend
from harness.measure.case import Case
from harness.measure.inputs import Inputs
from harness.measure.params import narrowed
from harness.measure.registry import get_backend_class
from harness.measure.timing import TimingSettings
from harness.measure.worker import run_case
from harness.store.records import Status
from tests.backend_checks import assert_matches_reference

TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-3}


@pytest.fixture
def fmha():
    return pytest.importorskip("xformers.ops.fmha")


@pytest.fixture
def fresh_cache():
    xops.xformers_reasons.cache_clear()
    yield
    xops.xformers_reasons.cache_clear()


def full(causal: bool = False) -> XformersFull:
    return XformersFull(XformersFull.Params(causal=causal))


def windowed(window: int, causal: bool = False) -> XformersLongformer:
    return XformersLongformer(XformersLongformer.Params(window=window, causal=causal))


def window_definition(n: int, window: int, causal: bool) -> torch.Tensor:
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    return ((i - j).abs() <= window) & ((j <= i) if causal else True)  # [N, N]


def test_registered():
    assert get_backend_class("xformers-full") is XformersFull
    assert get_backend_class("xformers-longformer") is XformersLongformer
    assert XformersFull.family == "full" and not XformersFull.is_sparse
    assert XformersLongformer.family == "longformer" and XformersLongformer.is_sparse
    for cls in (XformersFull, XformersLongformer):
        assert cls.devices == frozenset({"cuda"}) and torch.float64 not in cls.dtypes
    assert XformersFull.Params is FullNaive.Params and type(full().plain) is FullNaive
    assert windowed(16, causal=True).label() == "xformers-longformer(window=16, causal)"


def test_window_kernel_takes_the_family_declaration_of_its_two_parameters():
    params_cls = XformersLongformer.Params
    assert [f.name for f in dataclasses.fields(params_cls)] == ["window", "causal"]
    assert params_cls.__dataclass_params__.frozen
    family = {f.name: f for f in dataclasses.fields(LongformerParams)}
    for f in dataclasses.fields(params_cls):  # type, default and flag as the family declares
        assert (f.type, f.default, f.metadata) == (
            family[f.name].type,
            family[f.name].default,
            family[f.name].metadata,
        )
    assert params_cls.__module__ == "attention_impls.longformer"
    assert params_cls.__qualname__ == "XformersLongformer.Params"
    backend = windowed(16, causal=True)
    assert backend.params_json() == '{"causal":true,"window":16}'
    assert backend.plain.params == LongformerParams(window=16, causal=True)
    assert type(backend.plain) is Longformer
    again = pickle.loads(pickle.dumps(backend))  # case processes receive backends pickled
    assert again.params == backend.params and again.plain.params == backend.plain.params
    with pytest.raises(ValueError, match="LongformerParams has no field stride"):
        narrowed(LongformerParams, "window", "stride", qualname="X")
    with pytest.raises(ValueError, match="named twice"):
        narrowed(LongformerParams, "window", "window", qualname="X")


@pytest.mark.parametrize("make", [full, lambda causal: windowed(8, causal)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_cpu_reasons_come_from_xformers(fmha, fresh_cache, make, dtype, causal, requires_grad):
    import xformers

    inputs = Inputs(1, 2, 64, 32, dtype=dtype, requires_grad=requires_grad)
    reasons = make(causal).not_supported_reasons(inputs)
    assert len(reasons) == 1
    assert f"xformers {xformers.__version__}" in reasons[0]
    assert "device=cpu (supported: {'cuda'})" in reasons[0]


def test_cpu_case_is_skipped_with_the_reason(fmha, fresh_cache):
    for backend in (full(), windowed(4)):
        row = run_case(Case(backend, Inputs(1, 2, 64, 16), "fwd", TimingSettings(), 8))
        assert row["status"] == Status.SKIPPED and "device=cpu" in row["reason"]


def test_window_bias_reason_names_the_bias(fmha, fresh_cache):
    # The CPU build's dispatcher tries its ROCm kernel, which takes no symmetric local window.
    reasons = windowed(8).not_supported_reasons(Inputs(1, 2, 64, 32, dtype=torch.float16))
    assert "attn_bias type is LocalAttentionFromBottomRightMask" in reasons[0]


def test_reasons_are_cached(fmha, fresh_cache):
    inputs = Inputs(1, 2, 64, 32)
    first = full().not_supported_reasons(inputs)
    assert full().not_supported_reasons(Inputs(1, 4, 128, 32)) == first  # shape-independent
    info = xops.xformers_reasons.cache_info()
    assert info.misses == 1 and info.hits == 1


def test_reason_when_xformers_is_not_importable(monkeypatch, fresh_cache):
    real_import = builtins.__import__

    def no_xformers(name, *args, **kwargs):
        if name == "xformers" or name.startswith("xformers."):
            raise ImportError(f"No module named {name!r}\nsecond line")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xformers)
    for backend in (full(causal=True), windowed(4)):
        reasons = backend.not_supported_reasons(Inputs(1, 2, 64, 32, device="cuda"))
        assert reasons == ["xformers is not importable (ImportError: No module named 'xformers')"]


def test_declared_limits_where_xformers_cannot_be_asked(fresh_cache):
    reasons = full().not_supported_reasons(Inputs(1, 2, 64, 32, device="mps"))
    assert len(reasons) == 1 and "device mps" in reasons[0]


@pytest.mark.parametrize(("n", "window"), [(17, 1), (17, 4), (64, 8), (100, 7), (9, 8)])
@pytest.mark.parametrize("causal", [False, True])
def test_mask_is_the_plain_longformer_window(n, window, causal):
    inputs = Inputs(1, 1, n, 4)
    q, k, _ = inputs.make_qkv()
    mask = windowed(window, causal).mask(inputs, q, k)
    plain = Longformer(LongformerParams(window=window, causal=causal)).mask(inputs, q, k)
    assert mask.shape == (1, 1, n, n) and torch.equal(mask, plain)
    assert torch.equal(mask[0, 0], window_definition(n, window, causal))
    rows = torch.tensor([n - 1, 0, n // 2])
    assert torch.equal(windowed(window, causal).mask(inputs, q, k, rows)[0, 0], mask[0, 0, rows])


@pytest.mark.parametrize(("n", "window"), [(17, 1), (17, 4), (64, 8), (100, 7), (9, 8)])
@pytest.mark.parametrize("causal", [False, True])
def test_bias_materialises_to_the_mask(fmha, n, window, causal):
    bias = xops.make_bias(fmha, causal, window)
    attended = bias.materialize((n, n), dtype=torch.float32).isfinite()  # 0 kept, -inf dropped
    assert torch.equal(attended, window_definition(n, window, causal))


@pytest.mark.parametrize("causal", [False, True])
def test_full_bias_materialises_to_the_mask(fmha, causal):
    n = 23
    bias = xops.make_bias(fmha, causal, None)
    if not causal:
        assert bias is None
        return
    attended = bias.materialize((n, n)).isfinite()
    assert torch.equal(attended, causal_mask(Inputs(1, 1, n, 4), None, torch.device("cpu"))[0, 0])


def reference_kernel(q, k, v, attn_bias=None):
    """Stand-in for memory_efficient_attention on CPU: dense, xformers' layout and bias."""
    b, n, h, d = q.shape  # [B, N, H, D]
    assert (b, n, h, d) == (2, 37, 3, 16), "the closure must pass xformers' [B, N, H, D]"
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, N, D]
    scores = q @ k.transpose(-1, -2) * d**-0.5  # [B, H, N, N]
    if attn_bias is not None:
        scores = scores + attn_bias.materialize((n, n), dtype=scores.dtype)
    return (scores.softmax(dim=-1) @ v).transpose(1, 2)  # [B, N, H, D]


@pytest.mark.parametrize("make", [full, lambda causal: windowed(5, causal)])
@pytest.mark.parametrize("causal", [False, True])
def test_closure_wiring_with_a_reference_kernel(fmha, monkeypatch, make, causal):
    monkeypatch.setattr(fmha, "memory_efficient_attention", reference_kernel)
    backend = make(causal)
    inputs = Inputs(2, 3, 37, 16, dtype=torch.float64, seed=5)
    assert_matches_reference(backend, inputs, 1e-10, 1e-10)
    out = backend.prepare(inputs)(*inputs.make_qkv())
    assert out.shape == inputs.shape  # [B, H, N, D] back


def test_param_errors_and_estimate():
    assert windowed(64).param_errors(64) == ["window 64 must be smaller than the length 64"]
    assert windowed(0).param_errors(64) == ["window 0 must be at least 1"]
    assert windowed(8, causal=True).param_errors(64) == []
    inputs = Inputs(1, 4, 4096, 64, requires_grad=True)
    base = AttentionBackend().estimate_bytes(inputs)  # output and gradients, no scores
    assert windowed(256).estimate_bytes(inputs) == full().estimate_bytes(inputs) == base
    assert base == 4 * 4 * 4096 * 64 * 4  # output, dq, dk, dv [B, H, N, D] float32
    assert full().estimate_bytes(Inputs(1, 4, 4096, 64)) == base // 4


@pytest.mark.cuda
@pytest.mark.parametrize("make", [full, lambda causal: windowed(8, causal)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference_cuda(fresh_cache, make, dtype, causal):
    backend = make(causal)
    inputs = Inputs(2, 2, 100, 64, dtype=dtype, device="cuda", seed=7)
    reasons = backend.not_supported_reasons(Inputs(**{**inputs.__dict__, "requires_grad": True}))
    if reasons:
        pytest.skip(reasons[0])
    assert_matches_reference(backend, inputs, TOLERANCE[dtype], TOLERANCE[dtype])


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [full(), full(causal=True), windowed(8, causal=True)])
def test_matches_reference_cuda_float32(fresh_cache, backend):
    # CUTLASS takes float32 with these biases (not the symmetric window: see below).
    inputs = Inputs(2, 2, 100, 64, device="cuda", seed=8)
    reasons = backend.not_supported_reasons(Inputs(**{**inputs.__dict__, "requires_grad": True}))
    if reasons:
        pytest.skip(reasons[0])
    assert_matches_reference(backend, inputs, TOLERANCE[torch.float32], TOLERANCE[torch.float32])


@pytest.mark.cuda
def test_cuda_float32_symmetric_window_has_a_reason(fmha, fresh_cache):
    reasons = windowed(8).not_supported_reasons(Inputs(1, 2, 64, 64, device="cuda"))
    assert len(reasons) == 1 and "LocalAttentionFromBottomRightMask" in reasons[0]
