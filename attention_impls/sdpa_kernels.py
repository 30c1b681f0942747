"""Full attention through ``torch.nn.functional.scaled_dot_product_attention`` pinned to one
kernel each, so that the kernels PyTorch would otherwise choose between are measured apart.

API: ``F.scaled_dot_product_attention(q, k, v, is_causal=..., attn_mask=..., enable_gqa=...)``
under ``torch.nn.attention.sdpa_kernel(SDPBackend.X)`` (PyTorch docs, "torch.nn.attention"), with
``full-sdpa``'s arguments (``full.sdpa_arguments``: grouped-query attention by ``enable_gqa``,
decoding and packed documents by a boolean ``[M, N]`` mask). Layout ``[B, H, N, D]``, as
everywhere in the project; the pattern is ``full`` (causal: ``j <= i``), held as the family's
plain backend (``harness.measure.backend.Kernel``).

- ``sdpa-math`` (``SDPBackend.MATH``): the reference composite of ordinary ops; it materialises
  the ``[B, H, M, N]`` scores like ``full-naive``. Runs everywhere.
- ``sdpa-flash`` (``SDPBackend.FLASH_ATTENTION``): FlashAttention-2 (Dao, 2023, arXiv:2307.08691)
  on CUDA (float16/bfloat16, sm80+; no ``attn_mask``); on CPU a flash-style tiled kernel with an
  online softmax, which takes a mask (seen: no score matrix, see ``full.sdpa_mask_bytes``).
- ``sdpa-efficient`` (``SDPBackend.EFFICIENT_ATTENTION``): the memory-efficient kernel from
  xformers (Rabe and Staats, 2021, arXiv:2112.05682; CUTLASS implementation). CUDA only.
- ``sdpa-cudnn`` (``SDPBackend.CUDNN_ATTENTION``): cuDNN's fused attention. CUDA only.

Which inputs a kernel takes changes with the PyTorch version and the GPU, so it is asked of
PyTorch instead of declared (every backend declares both devices and every dtype). Everywhere a
tiny probe call under the pinned kernel decides (forward, and backward when gradients are
wanted), and a refusal becomes the reason. On CUDA the reason is in PyTorch's words:
``torch.backends.cuda.can_use_*(SDPAParams(...), debug=True)`` states them as warnings (on
stderr where its binding does not make them Python warnings), and a refused pinned call repeats
them kernel by kernel as Python warnings; both are captured with ``warnings.catch_warnings`` and
only the pinned kernel's are kept. On CPU PyTorch says only
"No viable backend ...". The probe uses ``[1, G, 16, D]`` queries (8 when decoding) over
``[1, 1, 16, D]`` keys and values, with a boolean mask where the case has one: limits that only
a larger shape reaches are not foreseen.
"""

from __future__ import annotations

import functools
import re
import warnings
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attention_impls.footprint import fused_attention_bytes, rows_bytes
from attention_impls.full import (
    FullNaive,
    masked,
    score_matrices_bytes,
    sdpa_arguments,
    sdpa_is_causal,
    sdpa_mask_bytes,
)
from harness.measure.backend import AttentionFn, Kernel
from harness.measure.inputs import Inputs, dtype_name
from harness.measure.registry import register

PROBE_LEN = 16
PROBE_QUERIES = 8  # decoding: fewer queries than keys

# Per kernel: its can_use_* checker, and the word that names it in the headers of PyTorch's
# explanation of a refused call ("Flash attention kernel not used because:"). MATH has neither.
_CHECKERS = {
    "FLASH_ATTENTION": ("can_use_flash_attention", "flash"),
    "EFFICIENT_ATTENTION": ("can_use_efficient_attention", "efficient"),
    "CUDNN_ATTENTION": ("can_use_cudnn_attention", "cudnn"),
}
_HEADER_END = "not used because:"
# C++ warnings carry where they were raised; the reason needs only what they say.
_TRIGGERED = re.compile(r"\s*\(Triggered internally at [^)]*\)\.?")


def _messages(caught: list[warnings.WarningMessage]) -> list[str]:
    """Distinct warning texts, in order, without the C++ source location."""
    texts = [_TRIGGERED.sub("", str(w.message)).strip() for w in caught]
    return list(dict.fromkeys(t for t in texts if t))


def kernel_messages(messages: list[str], word: str | None) -> list[str]:
    """The messages about one kernel.

    A refused call explains every fused kernel, each under a header "<kernel> not used
    because:", the disabled ones included ("... has been runtime disabled"): keep the section
    whose header names ``word``, and whatever came before the first header (can_use_*'s own).
    """
    kept, keep = [], True
    for message in messages:
        if message.endswith(_HEADER_END):
            keep = word is not None and word in message.lower()
        elif keep:
            kept.append(message)
    return kept


def _sdpa_params(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, causal: bool, gqa: bool
):
    params_cls = torch.backends.cuda.SDPAParams
    try:  # (query, key, value, attn_mask, dropout_p, is_causal, enable_gqa) since PyTorch 2.5
        return params_cls(q, k, k, mask, 0.0, causal, gqa)
    except TypeError:  # earlier versions lack enable_gqa
        return params_cls(q, k, k, mask, 0.0, causal)


def shape_text(groups: int, decoding: bool, mask: bool) -> str:
    """The probe's words for the case's shape, each part after a comma."""
    text = f", {groups} query heads per key/value head (enable_gqa)" if groups > 1 else ""
    text += f", {PROBE_QUERIES} queries over {PROBE_LEN} keys" if decoding else ""
    return text + (", a boolean attn_mask" if mask else "")


@functools.lru_cache(maxsize=256)
def probe(
    kernel: str,
    device: str,
    dtype: torch.dtype,
    head_dim: int,
    causal: bool,
    requires_grad: bool,
    groups: int = 1,
    decoding: bool = False,
    mask: bool = False,
) -> str | None:
    """Why PyTorch refuses ``SDPBackend.<kernel>`` for such inputs, or None when it runs them.

    ``causal`` is ``is_causal``; ``groups`` query heads share each key/value head; ``decoding``:
    fewer queries than keys; ``mask``: a boolean ``attn_mask`` (``full.sdpa_arguments``).
    Cached: ``--list-backends`` and every case of a sweep ask it.
    """
    what = f"{dtype_name(dtype)}, head_dim {head_dim}" + (", causal" if causal else "")
    what += shape_text(groups, decoding, mask)
    what += ", with backward" if requires_grad else ""
    version, dev = torch.__version__, torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"{kernel} needs CUDA, which is not available to PyTorch {version}"
    checker_name, word = _CHECKERS.get(kernel, ("", None))
    checker = getattr(torch.backends.cuda, checker_name, None) if dev.type == "cuda" else None
    q_len = PROBE_QUERIES if decoding else PROBE_LEN
    # The probe must build a graph even when the caller runs under no_grad.
    with warnings.catch_warnings(record=True) as caught, torch.enable_grad():
        warnings.simplefilter("always")
        # Ones, not random values: the probe must not advance the global random generator.
        q = torch.ones(1, groups, q_len, head_dim, device=dev, dtype=dtype)  # [1, G, M, D]
        k, v = (
            torch.ones(1, 1, PROBE_LEN, head_dim, device=dev, dtype=dtype) for _ in range(2)
        )  # [1, 1, 16, D] each
        q, k, v = (t.requires_grad_(requires_grad) for t in (q, k, v))
        # bottom-right causal, as decoding needs: every row keeps a key
        allowed = torch.ones(q_len, PROBE_LEN, dtype=torch.bool, device=dev).tril(
            PROBE_LEN - q_len
        )  # [M, 16]
        args = {"attn_mask": allowed} if mask else {}
        args |= {"enable_gqa": True} if groups > 1 else {}
        if checker is not None:
            # Its reasons arrive as warnings where the binding converts them (otherwise on
            # stderr); the refused call below repeats them as Python warnings, which it always
            # converts. The call decides: PyTorch's dispatch runs this same check.
            checker(_sdpa_params(q, k, args.get("attn_mask"), causal, groups > 1), debug=True)
        try:
            with sdpa_kernel(getattr(SDPBackend, kernel)):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, **args)
                if requires_grad:
                    torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        except RuntimeError as exc:
            error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            said = kernel_messages(_messages(caught), word)
            if said:
                return (
                    f"PyTorch {version} refuses {kernel} on {dev} ({what}): {'; '.join(said)} "
                    f"(scaled_dot_product_attention: {error})"
                )
            return (
                f"PyTorch {version} has no {kernel} kernel for {dev.type} ({what}): "
                f"scaled_dot_product_attention raised: {error}"
            )
    return None


class _PinnedSdpa(Kernel):
    """``F.scaled_dot_product_attention`` with PyTorch's choice narrowed to ``kernel``, computing
    the full family's pattern (held: ``full-naive``), with the arguments of ``full-sdpa``
    (``full.sdpa_arguments``). Grouped-query attention, decoding and documents are declared:
    the probe of the case's shape says where the pinned kernel refuses them."""

    pattern = FullNaive
    kernel: ClassVar[SDPBackend]
    supports_gqa = supports_decoding = supports_documents = True

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if reasons:
            return reasons
        causal = self.params.causal
        why = probe(
            self.kernel.name,
            str(inputs.device),
            inputs.dtype,
            inputs.head_dim,
            sdpa_is_causal(inputs, causal),
            inputs.requires_grad,
            inputs.heads // inputs.kv_heads_count,
            inputs.decoding,
            masked(inputs, causal) and not sdpa_is_causal(inputs, causal),
        )
        return [why] if why else []

    def prepare(self, inputs: Inputs) -> AttentionFn:
        args, kernel = sdpa_arguments(inputs, self.params.causal), self.kernel

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            # Entering the context (microseconds) is timed with the call, like any dispatch;
            # the backward kernel is fixed by the forward's choice, so it needs no context.
            with sdpa_kernel(kernel):
                return F.scaled_dot_product_attention(q, k, v, **args)  # [B, H, M, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The fused kernels keep no M x N matrix: ``fused_attention_bytes`` (measured for
        FLASH_ATTENTION on CPU; on CUDA, where EFFICIENT_ATTENTION and CUDNN_ATTENTION run too,
        unmeasured), and the additive copy of a mask (``sdpa_mask_bytes``). MATH overrides it."""
        return fused_attention_bytes(inputs) + sdpa_mask_bytes(inputs, self.params.causal)


@register
class SdpaMath(_PinnedSdpa):
    name = "sdpa-math"
    description = "scaled_dot_product_attention pinned to MATH (reference composite, N x N scores)"
    kernel = SDPBackend.MATH

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The M x N matrices of ``score_matrices_bytes`` and beside them: forward, the boolean
        ``[B, H, M, N]`` with which ``_safe_softmax`` finds fully masked rows and the q that the
        composite scales by sqrt(scale) (as it does k); with a backward pass the saved scaled q
        and k, the output and dv (the forward's two matrices and boolean are then the smaller
        moment). Grouped-query attention adds k and v repeated to ``[B, H, N, D]`` (the
        composite's ``repeat_interleave``, kept for the backward), a mask its additive copy."""
        b, h, m, _ = inputs.shape
        n = inputs.seq_len
        extra = sdpa_mask_bytes(inputs, self.params.causal)
        extra += 2 * rows_bytes(inputs, n) if inputs.grouped else 0
        if inputs.requires_grad:
            vectors = 2 * rows_bytes(inputs, m) + 2 * rows_bytes(inputs, n)
            return score_matrices_bytes(inputs) + vectors + extra
        return score_matrices_bytes(inputs) + b * h * m * n + rows_bytes(inputs, m) + extra


@register
class SdpaFlash(_PinnedSdpa):
    name = "sdpa-flash"
    description = "scaled_dot_product_attention pinned to FLASH_ATTENTION (FlashAttention-2 / CPU)"
    kernel = SDPBackend.FLASH_ATTENTION


@register
class SdpaEfficient(_PinnedSdpa):
    name = "sdpa-efficient"
    description = "scaled_dot_product_attention pinned to EFFICIENT_ATTENTION (memory-efficient)"
    kernel = SDPBackend.EFFICIENT_ATTENTION


@register
class SdpaCudnn(_PinnedSdpa):
    name = "sdpa-cudnn"
    description = "scaled_dot_product_attention pinned to CUDNN_ATTENTION (cuDNN fused)"
    kernel = SDPBackend.CUDNN_ATTENTION
