"""SDPA pinned to one kernel each: outputs and gradients against the dense reference where the
kernel runs, PyTorch's own reason (before the case runs) where it does not."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend

import attention_impls.sdpa_kernels as sdpa
from harness.measure.case import Case
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from harness.measure.timing import TimingSettings
from harness.measure.worker import run_case
from harness.store.records import Status
from tests.backend_checks import assert_matches_reference, largest_intermediate

NAMES = ["sdpa-math", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn"]
KERNELS = {
    "sdpa-math": "MATH",
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
}
TOLERANCE = {  # calibrated on CPU: the largest errors seen were about half of these
    torch.float32: 1e-5,
    torch.float64: 1e-10,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


def make(name: str, causal: bool = False):
    cls = get_backend_class(name)
    return cls(cls.Params(causal=causal))


def test_the_sdpa_api_this_module_calls():
    """The enum members, SDPAParams and can_use_* checkers ``sdpa_kernels`` uses, all in torch
    2.11's documentation and 2.13's source: a checker missing on another torch would otherwise
    only cost the CUDA reasons their words (``probe`` looks them up with a default)."""
    assert all(hasattr(SDPBackend, kernel) for kernel in KERNELS.values())
    assert callable(torch.backends.cuda.SDPAParams)
    for checker, _word in sdpa._CHECKERS.values():
        assert callable(getattr(torch.backends.cuda, checker, None)), checker


def test_registered_as_full_attention():
    for name in NAMES:
        cls = get_backend_class(name)
        assert cls.family == "full" and not cls.is_sparse and cls.kernel.name == KERNELS[name]
        assert cls.Params().causal is False and cls.supports_backward


@pytest.mark.parametrize("name", ["sdpa-math", "sdpa-flash"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seq_len", [1, 37, 100])
def test_matches_reference_cpu(name, dtype, causal, seq_len):
    backend = make(name, causal)
    inputs = Inputs(2, 3, seq_len, 16, dtype=dtype, seed=seq_len)
    assert backend.not_supported_reasons(Inputs(**{**inputs.__dict__, "requires_grad": True})) == []
    tol = TOLERANCE[dtype]
    mask = assert_matches_reference(backend, inputs, tol, tol)
    expected = seq_len * (seq_len + 1) // 2 if causal else seq_len**2
    assert mask.sum().item() == 2 * 3 * expected


@pytest.mark.parametrize("name", ["sdpa-efficient", "sdpa-cudnn"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_cpu_has_no_efficient_or_cudnn_kernel(name, requires_grad):
    inputs = Inputs(1, 2, 64, 32, requires_grad=requires_grad)
    reasons = make(name, causal=True).not_supported_reasons(inputs)
    assert len(reasons) == 1
    assert KERNELS[name] in reasons[0] and "cpu" in reasons[0]
    assert torch.__version__ in reasons[0] and "head_dim 32, causal" in reasons[0]
    assert ("with backward" in reasons[0]) == requires_grad


def test_cpu_case_is_skipped_with_the_reason():
    inputs = Inputs(1, 2, 64, 16)
    row = run_case(Case(make("sdpa-cudnn"), inputs, "fwd", TimingSettings(), 8))
    assert row["status"] == Status.SKIPPED and "CUDNN_ATTENTION kernel for cpu" in row["reason"]


def test_probe_is_cached_and_needs_no_grad_mode():
    sdpa.probe.cache_clear()
    inputs = Inputs(1, 2, 64, 24, requires_grad=True)
    with torch.no_grad():  # the backward probe must still build its graph
        assert make("sdpa-flash").not_supported_reasons(inputs) == []
    assert make("sdpa-flash").not_supported_reasons(inputs) == []
    info = sdpa.probe.cache_info()
    assert info.misses == 1 and info.hits == 1


def test_probe_leaves_the_global_random_generator_alone():
    sdpa.probe.cache_clear()
    state = torch.random.get_rng_state()
    make("sdpa-math").not_supported_reasons(Inputs(1, 1, 8, 8, requires_grad=True))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_kernel_messages_keep_the_pinned_kernels_section():
    # The shape of PyTorch's explanation of a refused pinned call on CUDA (sdp_utils.cpp).
    messages = [
        "from can_use_flash_attention",
        "Memory efficient kernel not used because:",
        "Memory Efficient attention has been runtime disabled.",
        "Flash attention kernel not used because:",
        "Expected query, key and value to all be of dtype: {Half, BFloat16}.",
        "CuDNN attention kernel not used because:",
        "CuDNN attention has been runtime disabled.",
    ]
    assert sdpa.kernel_messages(messages, "flash") == [messages[0], messages[4]]
    assert sdpa.kernel_messages(messages, "efficient") == [messages[0], messages[2]]
    assert sdpa.kernel_messages(messages, "cudnn") == [messages[0], messages[6]]
    assert sdpa.kernel_messages(messages, None) == [messages[0]]


def test_declared_limits_come_before_the_probe():
    reasons = make("sdpa-flash").not_supported_reasons(Inputs(1, 1, 8, 8, device="mps"))
    assert len(reasons) == 1 and "device mps" in reasons[0]


def test_pinned_kernels_differ_in_memory():
    # The math kernel materialises the scores; the CPU flash kernel does not: the pin works.
    n = 256
    inputs = Inputs(1, 2, n, 16, requires_grad=True)
    assert largest_intermediate(make("sdpa-math"), inputs) >= 2 * n * n
    assert largest_intermediate(make("sdpa-flash"), inputs) < n * n // 4


def test_estimate_bytes(monkeypatch):
    n = 1024
    matrix, boolean, vector = 2 * n * n * 4, 2 * n * n, 2 * n * 64 * 4
    grad, plain = Inputs(1, 2, n, 64, requires_grad=True), Inputs(1, 2, n, 64)
    # MATH: three N x N with a backward pass (softmax, its gradient, the scores' gradient) and
    # four [B, H, N, D]; forward two N x N, _safe_softmax's boolean N x N and the scaled q
    assert make("sdpa-math").estimate_bytes(grad) == 3 * matrix + 4 * vector
    assert make("sdpa-math").estimate_bytes(plain) == 2 * matrix + boolean + vector
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # the CPU flash tiles: per thread
    tiles = {False: (256 * 512 + 2 * 256 + 256 * 64) * 4, True: 2 * 256 * 512 * 4}
    for name in ("sdpa-flash", "sdpa-efficient", "sdpa-cudnn"):
        backend = make(name)
        # CPU: output; backward dq, dk, dv and the flash kernel's copy of the output gradient
        assert backend.estimate_bytes(plain) == vector + tiles[False]
        assert backend.estimate_bytes(grad) == 5 * vector + tiles[True]
        # CUDA (unmeasured): output and gradients only
        cuda = Inputs(1, 2, n, 64, device="cuda", requires_grad=True)
        assert backend.estimate_bytes(cuda) == 4 * vector


@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference_cuda(name, dtype, causal):
    backend = make(name, causal)
    inputs = Inputs(2, 2, 100, 64, dtype=dtype, device="cuda", seed=3)
    reasons = backend.not_supported_reasons(Inputs(**{**inputs.__dict__, "requires_grad": True}))
    if reasons:  # a reason, never an exception, and PyTorch's own words name the kernel
        assert name not in ("sdpa-math", "sdpa-flash"), reasons
        assert len(reasons) == 1 and KERNELS[name] in reasons[0]
        return
    assert_matches_reference(backend, inputs, TOLERANCE[dtype], TOLERANCE[dtype])


@pytest.mark.cuda
def test_cuda_flash_refuses_float64_in_pytorchs_words():
    reasons = make("sdpa-flash").not_supported_reasons(
        Inputs(1, 2, 64, 64, dtype=torch.float64, device="cuda")
    )
    assert len(reasons) == 1 and "FLASH_ATTENTION" in reasons[0]
    # The captured can_use_flash_attention warning, not the bare fallback text.
    assert "dtype" in reasons[0].lower() and "returned False" not in reasons[0]


@pytest.mark.cuda
def test_cuda_math_matches_in_float32():
    inputs = Inputs(2, 2, 100, 64, device="cuda")
    assert make("sdpa-math").not_supported_reasons(inputs) == []
    assert_matches_reference(make("sdpa-math", causal=True), inputs, 1e-4, 1e-4)
