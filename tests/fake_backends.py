"""Backends that misbehave on purpose, to test that the runner turns each failure into a row.

They register under ``test-*`` names only while the ``fake_backends`` fixture is active.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import torch

from harness.measure.backend import AttentionBackend
from harness.measure.inputs import Inputs


@dataclass(frozen=True)
class FailAt:
    fail_from: int = 256  # misbehave at this length and longer; attend normally below it


class _Fake(AttentionBackend):
    family = "test"
    Params = FailAt

    def prepare(self, inputs: Inputs):
        failing = inputs.seq_len >= self.params.fail_from

        def fn(q, k, v):
            if failing:
                self.misbehave()
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

        return fn

    def misbehave(self) -> None:
        raise NotImplementedError


class Boom(_Fake):
    name = "test-boom"

    def misbehave(self) -> None:
        raise RuntimeError("deliberate failure")


class Hog(_Fake):
    """Asks for a petabyte: the allocation fails at once, nothing is touched."""

    name = "test-hog"

    def misbehave(self) -> None:
        torch.empty(2**50, dtype=torch.uint8)


class Sleepy(_Fake):
    name = "test-sleepy"

    def misbehave(self) -> None:
        time.sleep(600)


class Segfault(_Fake):
    name = "test-segfault"

    def misbehave(self) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)


class Killed(_Fake):
    """Dies as the kernel's OOM killer would make it die."""

    name = "test-killed"

    def misbehave(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class Wrong(_Fake):
    """Attends everything but claims a causal mask: the correctness check must catch it."""

    name = "test-wrong"

    def mask(self, inputs, q, k, rows=None):
        n = inputs.seq_len
        q_pos = torch.arange(n) if rows is None else rows
        return (torch.arange(n)[None, :] <= q_pos[:, None])[None, None]


class NotANumber(_Fake):
    """Outputs NaN from ``fail_from`` on: exactly what the correctness check exists to catch."""

    name = "test-nan"

    def misbehave(self) -> None:
        pass  # the output itself is the misbehaviour

    def prepare(self, inputs: Inputs):
        fn = super().prepare(inputs)
        failing = inputs.seq_len >= self.params.fail_from
        return (lambda q, k, v: fn(q, k, v) * float("nan")) if failing else fn


class CudaOnly(_Fake):
    name = "test-cuda-only"
    devices = frozenset({"cuda"})
    supports_backward = False


class Work(AttentionBackend):
    """Attention plus a fixed amount of matmul work, for regression checks: ``test-work-plus25``
    does 25% more of it under the same label, as a change that slows a backend down would."""

    name = "test-work"
    family = "test"
    # [512, 512] matmuls into one preallocated buffer, about 2 GFLOP per call: the same kind of
    # work as the calibration, so that normalising by it cancels the machine's speed
    rounds = 8

    def label(self) -> str:
        return "test-work"

    def prepare(self, inputs: Inputs):
        w = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
        out = torch.empty(512, 512)

        def fn(q, k, v):
            for _ in range(self.rounds):
                torch.matmul(w, w, out=out)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

        return fn


class WorkAgain(Work):
    """``test-work`` under another name, so that one sweep can time the same work twice (A/A)."""

    name = "test-work-again"


class WorkPlus25(Work):
    name = "test-work-plus25"
    rounds = 10


FAKES = (Boom, Hog, Sleepy, Segfault, Killed, Wrong, NotANumber, CudaOnly, Work, WorkAgain,
         WorkPlus25)  # fmt: skip
