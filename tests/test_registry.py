"""The registry and the contract every registered backend meets."""

from __future__ import annotations

import dataclasses
import re
import sys

import pytest
import torch

from harness.measure import registry
from harness.measure.backend import AttentionBackend
from harness.measure.inputs import Inputs
from harness.measure.registry import backend_names, get_backend_class
from harness.sweep.config import SweepConfig
from tests.backend_checks import assert_matches_reference

SMALL = (("window", 8), ("block_size", 16), ("chunk_size", 16), ("global_tokens", (0,)))


def test_the_four_families_are_registered():
    names = backend_names()
    assert {"full-naive", "full-sdpa", "longformer", "bigbird", "reformer"} <= set(names)
    assert len(names) == len(set(names))
    families = {get_backend_class(n).family for n in names}
    assert {"full", "longformer", "bigbird", "reformer"} <= families


def test_a_name_cannot_be_taken_twice():
    class Impostor(AttentionBackend):
        name = "full-naive"
        family = "full"

    with pytest.raises(ValueError, match="registered twice"):
        registry.register(Impostor)
    with pytest.raises(KeyError, match="unknown backend"):
        get_backend_class("nope")


@pytest.mark.parametrize("name", backend_names())
def test_every_backend_meets_the_contract(name, tmp_path):
    cls = get_backend_class(name)
    assert dataclasses.is_dataclass(cls.Params) and cls.Params.__dataclass_params__.frozen
    assert cls.__module__.startswith("attention_impls.") and cls.family
    assert re.search(r"\(.*\b20\d\d\b", sys.modules[cls.__module__].__doc__ or "")  # cites paper
    device = "cuda" if torch.cuda.is_available() else "cpu"
    overrides = SMALL
    if name == "flex-reformer" and device == "cpu":
        overrides += (("n_hashes", 1),)  # merging rounds needs a log-sum-exp the CPU lacks
    backend = SweepConfig(
        (300,), (name,), tmp_path, param_grid=tuple((k, (v,)) for k, v in overrides)
    ).make_backend(name)
    assert backend.param_errors(300) == []
    assert backend.label().startswith(name)
    inputs = Inputs(1, 2, 300, 16, seed=4, device=device, requires_grad=True)
    assert isinstance(backend.estimate_bytes(inputs), int)
    forward_only = Inputs(**{**inputs.__dict__, "requires_grad": False})
    refusals = backend.not_supported_reasons(forward_only)
    missing = [r for r in refusals if "is not installed or does not import" in r]
    if missing and cls.implementation != "ours":
        # a peer whose package is not installed here (an optional extra): its rows say how
        assert all("pip install -e '.[peers]'" in r for r in missing)
        pytest.skip(missing[0])
    if refusals:
        # Only a kernel that needs a GPU may refuse float32 here, and it must say why in words
        # that name the device.
        assert device == "cpu" and name.startswith(("sdpa-", "xformers-")), name
        assert all(re.search(r"\bcpu\b", r) for r in backend.not_supported_reasons(inputs))
        return
    grads = not backend.not_supported_reasons(inputs)  # compiled Flex on CPU: forward only
    mask = assert_matches_reference(backend, inputs, **({} if grads else {"grads": False}))
    if cls.is_sparse:
        assert mask.float().mean() < 0.9  # the pattern really leaves pairs out
    reasons = backend.not_supported_reasons(Inputs(1, 2, 300, 16, dtype=torch.int32))
    assert any("dtype" in r for r in reasons)
