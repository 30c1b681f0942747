"""Shared assertions: a backend's output and gradients equal dense attention under its own mask."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness.measure.backend import AttentionBackend
from harness.measure.inputs import Inputs
from harness.measure.reference import reference_mask


def assert_matches_reference(
    backend: AttentionBackend,
    inputs: Inputs,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    grads: bool = True,
) -> torch.Tensor:
    """Run ``backend`` on fresh random inputs; compare output and dq, dk, dv with the reference.

    ``grads=False`` compares the output only, on inputs without ``requires_grad`` (for backends
    with no backward pass on this device). Returns the full ``[B, H, M, N]`` mask so callers can
    also check its structure. The inputs' kv_heads, q_len and documents are checked the same way
    (``reference_mask``).
    """
    inputs = Inputs(**{**inputs.__dict__, "requires_grad": grads})
    q, k, v = inputs.make_qkv()

    out = backend.prepare(inputs)(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype

    rows = torch.arange(inputs.query_len)
    mask = reference_mask(backend, inputs, q.detach(), k.detach(), rows)
    mask = mask.expand(inputs.batch, inputs.heads, inputs.query_len, inputs.seq_len)
    assert mask.any(dim=-1).all(), "every query must attend at least one key"
    ref = backend.reference(inputs, q, k, v, rows, compute_dtype=q.dtype)
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    if not grads:
        return mask

    grad_out = inputs.make_grad_out()
    out_grads = torch.autograd.grad(out, (q, k, v), grad_out, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out, allow_unused=True)
    for name, g, rg in zip("qkv", out_grads, ref_grads, strict=True):
        if rg is None:  # the reference does not use this input (shared-QK ignores k)
            assert g is None or g.abs().max() == 0, f"d{name} should be zero"
            continue
        assert g is not None, f"no gradient for {name}"
        torch.testing.assert_close(g, rg, atol=atol, rtol=rtol, msg=lambda m, n=name: f"d{n}: {m}")
    return mask


class LargestTensor(TorchDispatchMode):
    """While active, records the element count of the largest tensor any op creates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def largest_intermediate(backend: AttentionBackend, inputs: Inputs) -> int:
    """The element count of the largest tensor any op creates in one forward(+backward) call.

    A sparse backend promising O(N) memory must keep this well below N * N.
    """
    q, k, v = inputs.make_qkv()
    fn = backend.prepare(inputs)
    with LargestTensor() as record:
        out = fn(q, k, v)
        if inputs.requires_grad:
            torch.autograd.grad(out, (q, k, v), inputs.make_grad_out(), allow_unused=True)
    return record.largest
