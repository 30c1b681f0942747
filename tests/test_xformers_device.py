"""xformers on a CUDA machine where it imports but its compiled library did not load (the device
image: torch 2.11.0+cu130, PyPI's xformers 0.0.35 built for 2.10.0+cu128 and linking
libcudart.so.12). Simulated on CPU: torch is told it has CUDA, and xformers' own load failure is
the real one where this machine has it (no libcudart.so.12 here either), or one built as xformers
builds it (its exception raised from torch's, raised from the loader's)."""

from __future__ import annotations

import pytest
import torch

import attention_impls.xformers_ops as xops
from attention_impls.full import XformersFull
from attention_impls.longformer import XformersLongformer
from harness.measure.inputs import Inputs

cpp_lib = pytest.importorskip("xformers._cpp_lib")
fmha = pytest.importorskip("xformers.ops.fmha")

BACKENDS = [
    XformersFull(XformersFull.Params()),
    XformersFull(XformersFull.Params(causal=True)),
    XformersLongformer(XformersLongformer.Params(window=8)),
    XformersLongformer(XformersLongformer.Params(window=8, causal=True)),
]
NO_CUDART_12 = "libcudart.so.12: cannot open shared object file: No such file or directory"
BUILD = {"version": {"cuda": 1208, "hip": None, "torch": "2.10.0+cu128", "python": "3.10.19"}}


@pytest.fixture
def device_image(monkeypatch):
    """torch as on the device image, as far as the reasons look: CUDA 13.0, a GPU present, no
    ROCm; the reasons' cache empty before and after."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    xops.xformers_reasons.cache_clear()
    yield
    xops.xformers_reasons.cache_clear()


def load_failure(loader_said: str, build: dict | None = BUILD) -> Exception:
    """The exception xformers keeps when ``torch.ops.load_library`` fails, chained as it is:
    xformers' own, from torch's "Could not load this library", from the loader's words."""
    torch_said = OSError("Could not load this library: /site/xformers/_C.so")
    torch_said.__cause__ = OSError(loader_said)
    if build is None:
        failed: Exception = cpp_lib.xFormersWasNotBuiltException()
    else:
        failed = cpp_lib.xFormersInvalidLibException(cpp_lib._BuildInfo(build))
    failed.__cause__ = torch_said
    return failed


def failing(monkeypatch, loader_said: str, build: dict | None = BUILD) -> None:
    monkeypatch.setattr(cpp_lib, "_cpp_library_load_exception", load_failure(loader_said, build))
    monkeypatch.setattr(fmha.common, "_built_with_cuda", False)


def reasons_on_cuda(backend, requires_grad: bool = False) -> list[str]:
    inputs = Inputs(1, 2, 64, 64, dtype=torch.bfloat16, device="cuda", requires_grad=requires_grad)
    return backend.not_supported_reasons(inputs)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.label())
@pytest.mark.parametrize("requires_grad", [False, True])
def test_missing_cuda_12_runtime_names_cause_and_fix(
    monkeypatch, device_image, backend, requires_grad
):
    import xformers

    failing(monkeypatch, NO_CUDART_12)
    assert reasons_on_cuda(backend, requires_grad) == [
        f"xformers {xformers.__version__}'s compiled library did not load (libcudart.so.12 not "
        "found; built for torch 2.10.0+cu128 with CUDA 12.8, this torch is 2.11.0+cu130 with "
        "CUDA 13.0), so xformers refuses every CUDA operator; carry nvidia-cuda-runtime-cu12 and "
        "start python with its nvidia/cuda_runtime/lib on LD_LIBRARY_PATH (README, 'The GPU check')"
    ]


def test_this_machines_own_failure(device_image):
    # The real exception of this machine's xformers, where its library did not load: the
    # loader's words and the build's versions come from it, not from a copy.
    import xformers

    failed = cpp_lib._cpp_library_load_exception
    if failed is None or fmha.common._built_with_cuda:
        pytest.skip("xformers' compiled library loaded here")
    (reason,) = reasons_on_cuda(BACKENDS[0])
    assert reason.startswith(f"xformers {xformers.__version__}'s compiled library did not load (")
    assert "so xformers refuses every CUDA operator; " in reason
    assert "\n" not in reason and "/_C.so" not in reason  # one line, the path dropped
    build = failed.build_info
    cuda = f"{build.cuda_version // 100}.{build.cuda_version % 100}"
    assert f"built for torch {build.torch_version} with CUDA {cuda}" in reason
    assert "this torch is 2.11.0+cu130 with CUDA 13.0" in reason
    root = failed
    while root.__cause__ is not None:
        root = root.__cause__
    if str(root).startswith("libcudart.so.12: cannot open shared object file"):
        assert "(libcudart.so.12 not found;" in reason
        assert reason.endswith(
            "carry nvidia-cuda-runtime-cu12 and start python with its nvidia/cuda_runtime/lib on "
            "LD_LIBRARY_PATH (README, 'The GPU check')"
        )


@pytest.mark.parametrize(
    ("loader_said", "detail", "fix"),
    [
        (
            "libcudart.so.13: cannot open shared object file: No such file or directory",
            "libcudart.so.13 not found",
            "carry nvidia-cuda-runtime and start python with its nvidia/cu13/lib on "
            "LD_LIBRARY_PATH",
        ),
        (
            "/site/xformers/_C.so: undefined symbol: torch_library_impl",
            "this torch lacks torch_library_impl",
            "install an xformers built for torch 2.11.0+cu130",
        ),
        (  # a runtime of a major no wheel is listed for: the loader's words, the plain advice
            "libcudart.so.99: cannot open shared object file: No such file or directory",
            "libcudart.so.99: cannot open shared object file: No such file or directory",
            "install an xformers built for torch 2.11.0+cu130",
        ),
        (
            "libc10_cuda.so: cannot open shared object file: No such file or directory",
            "libc10_cuda.so: cannot open shared object file: No such file or directory",
            "install an xformers built for torch 2.11.0+cu130",
        ),
    ],
)
def test_other_loader_words(monkeypatch, device_image, loader_said, detail, fix):
    failing(monkeypatch, loader_said)
    (reason,) = reasons_on_cuda(BACKENDS[3], requires_grad=True)
    assert f"did not load ({detail}; built for torch 2.10.0+cu128 with CUDA 12.8, " in reason
    assert reason.endswith(f"; {fix} (README, 'The GPU check')")


def test_no_library_at_all(monkeypatch, device_image):
    # A source checkout never built: xformers has no build information to quote.
    failing(monkeypatch, NO_CUDART_12, build=None)
    (reason,) = reasons_on_cuda(BACKENDS[0])
    assert "(libcudart.so.12 not found), so xformers refuses every CUDA operator" in reason
    assert "built for" not in reason


def test_not_said_where_the_library_loaded(monkeypatch, device_image):
    monkeypatch.setattr(cpp_lib, "_cpp_library_load_exception", None)
    monkeypatch.setattr(fmha.common, "_built_with_cuda", True)
    assert xops.library_failure(fmha, "0.0.35") is None


def test_not_said_for_an_xformers_built_without_cuda(monkeypatch, device_image):
    # Its library loaded but holds no CUDA: xformers' own "wasn't build with CUDA support" is
    # then right, and the operators are asked as usual.
    monkeypatch.setattr(cpp_lib, "_cpp_library_load_exception", None)
    monkeypatch.setattr(fmha.common, "_built_with_cuda", False)
    assert xops.library_failure(fmha, "0.0.35") is None


def test_not_said_on_rocm(monkeypatch, device_image):
    # xformers does not refuse CUDA-named devices for its flag on a ROCm torch.
    failing(monkeypatch, NO_CUDART_12)
    monkeypatch.setattr(torch.version, "hip", "7.0")
    assert xops.library_failure(fmha, "0.0.35") is None


def test_cpu_reasons_stay_xformers_own(monkeypatch):
    # On the CPU the device is the reason, library or not.
    failing(monkeypatch, NO_CUDART_12)
    xops.xformers_reasons.cache_clear()
    try:
        (reason,) = BACKENDS[0].not_supported_reasons(Inputs(1, 2, 64, 32))
    finally:
        xops.xformers_reasons.cache_clear()
    assert "device=cpu (supported: {'cuda'})" in reason and "did not load" not in reason


def test_cuda_text():
    assert xops._cuda_text(1208) == "12.8" and xops._cuda_text(1300) == "13.0"
    assert xops._cuda_text("13.0") == "13.0" and xops._cuda_text(None) == "none"
