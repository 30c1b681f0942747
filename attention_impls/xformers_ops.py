"""xformers machinery: the import, the bias objects, the support probe, and ``XformersKernel``,
the base of the kernels that compute a family's pattern with xformers (``xformers-full`` in
``attention_impls.full``, ``xformers-longformer`` in ``attention_impls.longformer``).

API: ``xformers.ops.memory_efficient_attention(q, k, v, attn_bias)`` (xformers docs,
"xformers.ops"), which dispatches to FlashAttention-3, FlashAttention-2 or its CUTLASS
memory-efficient kernel (Rabe and Staats, 2021, arXiv:2112.05682), whichever accepts the inputs
first. Masks are bias objects that the kernels apply without an ``N x N`` tensor:

- full attention: no bias, or ``LowerTriangularMask()`` when causal (``j <= i``).
- a window (the Longformer's, Beltagy et al., 2020, arXiv:2004.05150, section 3.1, with dilation
  1 and no global tokens): ``|i - j| <= w``, and ``j <= i`` when causal.
  ``LocalAttentionFromBottomRightMask(window_left=w, window_right=w)`` keeps
  ``i - w <= j + (N_q - N_k) <= i + w``, exactly the window when ``N_q == N_k``; causal uses
  ``LowerTriangularFromBottomRightLocalAttentionMask(w + 1)``, which keeps ``i - w <= j <= i``
  (its window counts the diagonal) and, unlike the symmetric bias, the CUTLASS kernel takes it.
  The tests materialise both biases and compare them with the Longformer mask.

Layout: the project's ``[B, H, N, D]``; xformers takes ``[B, N, H, D]``. The closure gets and
returns ``[B, H, N, D]`` tensors and converts with ``transpose(1, 2)``, a view (no copy, no time):
xformers' kernels take strided inputs as long as the last dimension is contiguous. The timed call
is the kernel plus whatever copy xformers itself decides to make.

Grouped-query attention (xformers takes it as 5-D ``[B, N, Hkv, G, D]`` inputs), decoding (the
biases above are aligned bottom-right only where stated) and packed documents (xformers'
``BlockDiagonalMask``) are not computed here yet: the kernels declare none of them
(``supports_*`` False), so such cases are refused with those reasons, after xformers' own.

xformers kernels exist only for CUDA (``devices = {"cuda"}``), and which one takes which inputs
changes with the version and the GPU, so ``not_supported_reasons`` asks xformers: the forward
operators its dispatcher would try (and their backward operators when gradients are wanted) are
each asked ``not_supported_reasons`` on tiny inputs of the case's dtype and device. xformers is
imported only then: importing it is slow, and it warns when it has no kernels for this torch.

One CUDA refusal is not the inputs' fault: when xformers' compiled library (``xformers/_C.so``)
did not load, xformers refuses every CUDA operator with "xFormers wasn't build with CUDA
support" (``AttentionOpBase.not_supported_reasons`` reads the flag ``_built_with_cuda``, false
whenever the library failed), though in 0.0.35 the attention kernels themselves are torch's
(``fa2F@...-pt`` calls ``aten::_flash_attention_forward`` where the ``flash_attn`` package is
absent, ``cutlassF-pt`` ``aten::_efficient_attention_forward``; FlashAttention-3 needs the
``flash_attn_3`` package; the library holds only 2:4-sparsity ops). The usual cause
is a CUDA runtime of another major version: PyPI's xformers 0.0.35 was built for torch
2.10.0+cu128 and links ``libcudart.so.12``, while PyPI's torch 2.11 brings CUDA 13's. So on CUDA
the reason is then the loader's own words (xformers keeps the exception in
``xformers._cpp_lib._cpp_library_load_exception``), the build and this torch, and what to do
(``LOAD_FIXES``).
"""

from __future__ import annotations

import functools
import re
import sys
from typing import Any, ClassVar

import torch

from harness.measure.backend import AttentionFn, Kernel
from harness.measure.inputs import Inputs

PROBE_LEN = 16
XFORMERS_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16})
_CLASS_REPR = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")
_LOADER_PATH = re.compile(r"^/\S+: ")  # dlerror's "/abs/path/_C.so: " before what went wrong

# The wheel that brings each CUDA major's runtime, and the folder of its install that holds
# libcudart (CUDA 13's wheel drops the suffix and moved the folder).
CUDA_RUNTIME_WHEELS = {
    "11": ("nvidia-cuda-runtime-cu11", "nvidia/cuda_runtime/lib"),
    "12": ("nvidia-cuda-runtime-cu12", "nvidia/cuda_runtime/lib"),
    "13": ("nvidia-cuda-runtime", "nvidia/cu13/lib"),
}
GPU_CHECK = "README, 'The GPU check'"

# What the loader said when xformers' library did not load -> what to say it means, and what to
# do; the first pattern that matches wins. Fields: the match's groups ({0}, {1}, ...), the wheel
# and folder of that CUDA major ({wheel}, {folder}) and this torch's version ({torch}).
LOAD_FIXES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"(libcudart\.so\.(\d+)): cannot open shared object file"),
        "{0} not found",
        f"carry {{wheel}} and start python with its {{folder}} on LD_LIBRARY_PATH ({GPU_CHECK})",
    ),
    (
        re.compile(r"undefined symbol: (\S+)"),
        "this torch lacks {0}",
        f"install an xformers built for torch {{torch}} ({GPU_CHECK})",
    ),
)
UNKNOWN_FIX = f"install an xformers built for torch {{torch}} ({GPU_CHECK})"


def _import_fmha() -> tuple[Any, str]:
    """``(xformers.ops.fmha, version)``; raises what a failed import raises."""
    import xformers
    import xformers.ops.fmha as fmha

    return fmha, xformers.__version__


def make_bias(fmha: Any, causal: bool, window: int | None) -> Any:
    """The bias object for full (``window`` None) or windowed attention, ``N_q == N_k``."""
    bias_mod = fmha.attn_bias
    if window is None:
        return bias_mod.LowerTriangularMask() if causal else None
    if causal:
        return bias_mod.LowerTriangularFromBottomRightLocalAttentionMask(window + 1)
    return bias_mod.LocalAttentionFromBottomRightMask(window_left=window, window_right=window)


def _summary(version: str, stage: str, refusals: list[tuple[str, list[str]]]) -> str:
    """One line from every operator's refusals: shared reasons once, then each one's own."""
    texts = [(name, [_CLASS_REPR.sub(r"\1", r) for r in reasons]) for name, reasons in refusals]
    shared = [r for r in texts[0][1] if all(r in own for _, own in texts[1:])]
    parts = list(shared)
    for name, own in texts:
        extra = [r for r in own if r not in shared]
        if extra:
            parts.append(f"{name}: [{'; '.join(extra)}]")
    names = ", ".join(name for name, _ in texts)
    said = "; ".join(parts)
    return f"xformers {version}, no {stage} operator takes these inputs ({names}): {said}"


def _forward_ops(fmha: Any, inp: Any, needs_gradient: bool) -> list[Any]:
    # What memory_efficient_attention tries, in its order. With a torch built without CUDA
    # (torch.version.cuda is None) that is the ROCm kernel ``ckF``, so CPU reasons name it.
    dispatch = fmha.dispatch
    if hasattr(dispatch, "_dispatch_fw_priority_list"):
        return list(dispatch._dispatch_fw_priority_list(inp, needs_gradient))
    return [fmha.flash.FwOp, fmha.cutlass.FwOp]  # older versions: their CUDA order


def _backward_ops(forward_ops: list[Any]) -> list[Any]:
    # Each kernel module pairs its FwOp with a BwOp; xformers' backward dispatcher tries the
    # same kernels in the same order.
    ops = [getattr(sys.modules[op.__module__], "BwOp", None) for op in forward_ops]
    return list(dict.fromkeys(op for op in ops if op is not None))


def _cuda_text(version: int | str | None) -> str:
    """xformers' ``1208`` or torch's ``"13.0"`` as ``12.8``, ``13.0``; "none" for a CPU build."""
    if version is None:
        return "none"
    if isinstance(version, int):
        return f"{version // 100}.{version % 100}"
    return version


def _loader_words(failed: BaseException) -> str:
    """The first line of the innermost cause: xformers' exception wraps torch's "Could not load
    this library", which wraps the loader's own words; a leading absolute path is dropped."""
    root = failed
    for _ in range(8):  # a bound, should a cause ever point back
        if root.__cause__ is None:
            break
        root = root.__cause__
    return _LOADER_PATH.sub("", (str(root).strip().splitlines() or [""])[0])


def _meaning_and_fix(said: str) -> tuple[str, str]:
    """``LOAD_FIXES``' reading of the loader's words: what went wrong, and what to do."""
    for pattern, meaning, remedy in LOAD_FIXES:
        found = pattern.search(said)
        if found is None:
            continue
        wheel, folder = CUDA_RUNTIME_WHEELS.get(found.groups()[-1], ("", ""))
        if "{wheel}" in remedy and not wheel:
            continue  # a CUDA major whose wheel is not known here: the plain advice
        fix = remedy.format(wheel=wheel, folder=folder, torch=torch.__version__)
        return meaning.format(*found.groups()), fix
    return said, UNKNOWN_FIX.format(torch=torch.__version__)


def library_failure(fmha: Any, version: str) -> str | None:
    """Why xformers refuses every CUDA operator when its compiled library did not load, and what
    to do, in one sentence; None when the library loaded, or when this xformers does not refuse
    CUDA for that (a ROCm torch, a version without the flag)."""
    if torch.version.hip is not None or getattr(fmha.common, "_built_with_cuda", True):
        return None
    from xformers import _cpp_lib

    failed = getattr(_cpp_lib, "_cpp_library_load_exception", None)
    if failed is None:
        return None  # an xformers built without CUDA: its own reason says so
    detail, fix = _meaning_and_fix(_loader_words(failed))
    build = getattr(failed, "build_info", None)  # None when there is no library at all
    if build is not None:
        detail += (
            f"; built for torch {build.torch_version} with CUDA {_cuda_text(build.cuda_version)}"
            f", this torch is {torch.__version__} with CUDA {_cuda_text(torch.version.cuda)}"
        )
    return (
        f"xformers {version}'s compiled library did not load ({detail}), so xformers refuses "
        f"every CUDA operator; {fix}"
    )


@functools.lru_cache(maxsize=256)
def xformers_reasons(
    device: str,
    dtype: torch.dtype,
    head_dim: int,
    causal: bool,
    requires_grad: bool,
    window: int | None,
) -> tuple[str, ...]:
    """Why ``memory_efficient_attention`` refuses such inputs, in xformers' words; () if it runs.

    Cached: ``--list-backends`` and every case of a sweep ask it.
    """
    try:
        fmha, version = _import_fmha()
    except Exception as exc:  # ImportError, or anything a broken build raises at import time
        first = (str(exc).strip().splitlines() or [""])[0]
        return (f"xformers is not importable ({type(exc).__name__}: {first})",)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return (f"xformers {version} needs CUDA, which is not available to torch",)
    if dev.type == "cuda":
        # Before asking the operators: without its library xformers refuses them all for a
        # reason ("wasn't build with CUDA support") that names neither the cause nor the fix.
        failure = library_failure(fmha, version)
        if failure is not None:
            return (failure,)
    # [1, 16, 1, D]: xformers' [B, N, H, D], built as the closure builds it (a transposed view).
    x = torch.zeros(1, 1, PROBE_LEN, head_dim, dtype=dtype, device=dev).transpose(1, 2)
    try:
        inp = fmha.Inputs(query=x, key=x, value=x, attn_bias=make_bias(fmha, causal, window))
        forward = _forward_ops(fmha, inp, requires_grad)
        stages = [("forward", forward)]
        if requires_grad:
            stages.append(("backward", _backward_ops(forward)))
        for stage, ops in stages:
            refusals = [(op.NAME, list(op.not_supported_reasons(inp))) for op in ops]
            if not refusals:
                return (f"xformers {version} lists no {stage} operator for these inputs",)
            if all(reasons for _, reasons in refusals):
                return (_summary(version, stage, refusals),)
    except Exception as exc:  # private dispatch API changed: a reason, not a failed listing
        return (f"xformers {version} could not be asked ({type(exc).__name__}: {exc})",)
    return ()


class XformersKernel(Kernel):
    """A family's pattern through ``memory_efficient_attention``: the declarations, the support
    check and ``prepare``. A kernel's ``Params`` have ``causal``; ``window`` says which bias."""

    why_not: ClassVar[dict[str, str]] = {axis: "not wired to xformers' own support yet" for axis in
               ("gqa", "decoding", "documents")}  # fmt: skip

    devices = frozenset({"cuda"})
    dtypes = XFORMERS_DTYPES

    def window(self) -> int | None:
        """The one-sided window of the bias, None for full attention."""
        return None

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        declared = super().not_supported_reasons(inputs)
        if torch.device(inputs.device).type not in ("cpu", "cuda"):
            return declared  # no tensors can be built there to ask xformers
        # xformers' own reasons first: they also say why the declared device or dtype is refused;
        # the shapes no kernel here computes yet (supports_* False) are refused either way.
        asked = xformers_reasons(
            str(inputs.device),
            inputs.dtype,
            inputs.head_dim,
            self.params.causal,
            inputs.requires_grad,
            self.window(),
        )
        return list(asked) + self.shape_reasons(inputs) if asked else declared

    def prepare(self, inputs: Inputs) -> AttentionFn:
        fmha, _ = _import_fmha()
        bias = make_bias(fmha, self.params.causal, self.window())
        attention = fmha.memory_efficient_attention

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # Views only: [B, H, N, D] -> [B, N, H, D] costs no copy; the output view back is free.
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, N, H, D]
            return attention(q, k, v, attn_bias=bias).transpose(1, 2)  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """A fused kernel keeps no score matrix: the output, and with a backward pass dq, dk, dv
        (``AttentionBackend``'s count). CUDA only, so unmeasured here; the log-sum-exp and the
        kernel's float32 accumulators are not counted."""
        return super().estimate_bytes(inputs)
