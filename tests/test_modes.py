"""The modes a case can time: what each call does, and that a sweep runs and checks each."""

from __future__ import annotations

import torch

from harness.measure.case import Case
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from harness.measure.timing import TimingSettings
from harness.measure.worker import mode_call, run_case
from harness.store.records import Status

FAST = TimingSettings(warmup_s=0.0, warmup_calls=1, min_time_s=0.0, min_repeats=3)


def _setup(requires_grad: bool):
    inputs = Inputs(1, 2, 64, 16, seed=5, requires_grad=requires_grad)
    backend = get_backend_class("full-naive")()
    q, k, v = inputs.make_qkv()
    return inputs, backend.prepare(inputs), q, k, v


def test_fwd_runs_without_autograd_and_fwd_grad_records_the_graph() -> None:
    _, fn, q, k, v = _setup(False)
    out, grads = mode_call("fwd", fn, q, k, v, None)()
    assert grads is None and not out.requires_grad
    _, fn, q, k, v = _setup(True)
    out, grads = mode_call("fwd-grad", fn, q, k, v, None)()
    assert grads is None and out.requires_grad and out.grad_fn is not None


def test_bwd_repeats_the_backward_of_one_forward() -> None:
    """Each bwd call walks the same graph again (retain_graph) and gives the gradients a
    forward+backward gives."""
    inputs, fn, q, k, v = _setup(True)
    grad_out = inputs.make_grad_out()
    call = mode_call("bwd", fn, q, k, v, grad_out)
    out_a, first = call()
    out_b, second = call()
    assert out_a is out_b  # no forward in the timed call
    _, both = mode_call("fwdbwd", fn, q, k, v, grad_out)()
    for a, b, c in zip(first, second, both, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
        assert a.abs().sum() > 0


def test_every_mode_is_measured_and_checked() -> None:
    backend = get_backend_class("full-naive")()
    for mode in ("fwd", "fwd-grad", "bwd", "fwdbwd"):
        inputs = Inputs(1, 2, 64, 16, seed=1, requires_grad=mode != "fwd")
        row = Case(backend, inputs, mode, FAST, 16).result(
            run_case(Case(backend, inputs, mode, FAST, 16))
        )
        assert row.status == Status.OK, (mode, row.reason)
        assert row.max_err is not None and row.max_err < 1e-4
        assert row.pass_ == mode and row.time_median_ms > 0
