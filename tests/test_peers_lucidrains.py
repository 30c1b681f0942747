"""lucidrains' performer-pytorch and nystrom-attention, driven on our q, k, v: each against the
dense formula it implements (outputs and gradients), its parameters mapped, its named deviations
from our family the only ones, its refusals; and a missing package is a reason, not an error."""

from __future__ import annotations

import sys

import pytest
import torch

from attention_impls.nystromformer import NO_CAUSAL, Nystromformer, NystromformerParams
from attention_impls.peers import lucidrains_performer as lp
from attention_impls.peers import optional
from attention_impls.peers.lucidrains_nystrom import Given, LucidrainsNystrom
from attention_impls.peers.lucidrains_performer import LucidrainsPerformer, performer_reference
from attention_impls.performer import Performer, PerformerParams
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from tests.backend_checks import assert_matches_reference

PERFORMER_MISSING = optional.missing("performer_pytorch", "performer-pytorch")
NYSTROM_MISSING = optional.missing("nystrom_attention", "nystrom-attention")
needs_performer = pytest.mark.skipif(PERFORMER_MISSING is not None, reason=str(PERFORMER_MISSING))
needs_nystrom = pytest.mark.skipif(NYSTROM_MISSING is not None, reason=str(NYSTROM_MISSING))


def shape(n: int, seed: int, **kw) -> Inputs:
    """float64, so that the comparison with the reference is to rounding."""
    return Inputs(**{"batch": 2, "heads": 4, "seq_len": n, "head_dim": 8,
                     "dtype": torch.float64, "seed": seed, **kw})  # fmt: skip


def performer(**params) -> LucidrainsPerformer:
    return LucidrainsPerformer(LucidrainsPerformer.Params(**{"random_features": 24, **params}))


def nystrom(landmarks: int = 8, iterations: int = 6) -> LucidrainsNystrom:
    return LucidrainsNystrom(LucidrainsNystrom.Params(landmarks, iterations))


# -- performer-pytorch ---------------------------------------------------------------------


@needs_performer
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "kv_heads", "q_len"),
                         [(1, None, None), (37, None, None), (130, 2, None), (300, 1, None),
                          (50, None, 9), (50, 2, 1)])  # fmt: skip
def test_performer_matches_its_formula(causal, n, kv_heads, q_len):
    backend = performer(causal=causal)
    inputs = shape(n, n, kv_heads=kv_heads, q_len=q_len, causal=causal)
    if causal and q_len is not None:
        assert "no causal decoding" in backend.not_supported_reasons(inputs)[0]
        return
    assert backend.not_supported_reasons(inputs) == []
    assert_matches_reference(backend, inputs, 1e-10, 1e-10)


@needs_performer
def test_performer_float32_matches_its_formula():
    assert_matches_reference(performer(random_features=64), Inputs(1, 2, 200, 16, seed=1))


@needs_performer
@pytest.mark.parametrize("fixed_norms", [False, True])
def test_performer_parameters_and_projection(fixed_norms):
    inputs = shape(64, 3)
    attn = performer(random_features=40, fixed_norms=fixed_norms, causal=True).module(inputs)
    assert (attn.nb_features, attn.ortho_scaling, attn.causal) == (40, int(fixed_norms), True)
    assert not attn.generalized_attention and not attn.no_projection
    # the same draws as our Performer's, without its sign correction
    ours = Performer(PerformerParams(random_features=40, fixed_norms=fixed_norms)).features(
        inputs, torch.float32
    )
    theirs = attn.projection_matrix
    assert torch.equal(theirs.abs(), ours.abs())
    assert not torch.equal(theirs, ours)
    again = performer(random_features=40, fixed_norms=fixed_norms).module(inputs)
    assert torch.equal(again.projection_matrix, theirs)  # reproducible per seed
    other = performer(random_features=40).module(Inputs(**{**inputs.__dict__, "seed": 4}))
    assert not torch.equal(other.projection_matrix, theirs)  # redrawn for another seed


@pytest.mark.parametrize("causal", [False, True])
def test_performer_deviations_are_the_named_ones(monkeypatch, causal):
    """Without its epsilons and with our projection, its formula is ours: the stabilisers it
    places differently cancel; what remains is the projection's signs and the epsilons."""
    inputs = shape(45, 6, causal=causal)
    q, k, v = inputs.make_qkv()
    ours = Performer(PerformerParams(random_features=24, causal=causal))
    rows = torch.arange(45)
    expected = ours.reference(inputs, q, k, v, rows)
    mask = torch.ones(45, 45, dtype=torch.bool).tril() if causal else None
    w = ours.features(inputs, torch.float64)
    with_eps = performer_reference(w, q, k, v, mask)
    monkeypatch.setattr(lp, "FEATURE_EPS", 0.0)
    monkeypatch.setattr(lp, "CAUSAL_EPS", 0.0)
    torch.testing.assert_close(performer_reference(w, q, k, v, mask), expected)
    assert (with_eps - expected).abs().max() > 1e-4  # its epsilon changes results


@needs_performer
def test_performer_causal_outputs_depend_on_later_keys():
    """Its epsilon after a key maximum over all keys: later keys reach earlier causal outputs
    (ours: ``test_performer.test_causal_outputs_ignore_later_keys``)."""
    inputs = shape(64, 2, batch=1, heads=2, head_dim=16, causal=True)
    q, k, v = inputs.make_qkv()
    fn = performer(random_features=64, causal=True).prepare(inputs)
    before = fn(q, k, v)
    k2 = k.clone()
    k2[:, :, 40:] *= 3
    assert (fn(q, k2, v)[:, :, :40] - before[:, :, :40]).abs().max() > 0.1


@needs_performer
def test_performer_reasons():
    documents = performer().not_supported_reasons(shape(64, 0, documents=2))
    assert any("2 documents" in r and "takes no mask" in r for r in documents)
    decoding = performer(causal=True).not_supported_reasons(shape(64, 0, q_len=3, causal=True))
    assert any("no causal decoding (q_len 3 of 64)" in r for r in decoding)
    assert performer(random_features=0).not_supported_reasons(shape(64, 0)) == [
        "random_features must be >= 1, got 0"
    ]


# -- nystrom-attention ---------------------------------------------------------------------


@needs_nystrom
@pytest.mark.parametrize(("n", "landmarks", "kv_heads"),
                         [(8, 8, None), (37, 8, None), (64, 64, 2), (100, 64, None),
                          (300, 16, 1), (41, 5, None)])  # fmt: skip
def test_nystrom_matches_its_formula(n, landmarks, kv_heads):
    backend = nystrom(landmarks)
    inputs = shape(n, n + landmarks, kv_heads=kv_heads)
    assert backend.not_supported_reasons(inputs) == []
    assert_matches_reference(backend, inputs, 1e-9, 1e-9)


@needs_nystrom
def test_nystrom_float32_matches_its_formula():
    assert_matches_reference(nystrom(16), Inputs(1, 2, 200, 16, seed=1))


@needs_nystrom
def test_nystrom_runs_without_its_projections():
    attn = nystrom(16, 4).module(shape(64, 0))
    assert isinstance(attn.to_qkv, Given) and isinstance(attn.to_out, torch.nn.Identity)
    assert (attn.num_landmarks, attn.pinv_iterations, attn.heads) == (16, 4, 4)
    assert not attn.residual and attn.scale == 8**-0.5


@needs_nystrom
def test_nystrom_deviations_are_the_named_ones():
    ours = Nystromformer(NystromformerParams(16, 6))
    # one matrix per batch (its global Z_0 scaling is then each matrix's own), no padding: ours
    one = shape(128, 1, batch=1, heads=1)
    q, k, v = one.make_qkv()
    torch.testing.assert_close(nystrom(16).prepare(one)(q, k, v), ours.prepare(one)(q, k, v))
    # more heads: one Z_0 scaling for all of them
    many = shape(128, 1)
    q, k, v = many.make_qkv()
    diff = nystrom(16).prepare(many)(q, k, v) - ours.prepare(many)(q, k, v)
    assert diff.abs().max() > 1e-6
    # padding that fills whole segments: 14 empty landmarks of 64 enter its pinv(A)
    padded = shape(100, 2, batch=1, heads=1)
    q, k, v = padded.make_qkv()
    ours = Nystromformer(NystromformerParams(64, 6))
    diff = nystrom(64).prepare(padded)(q, k, v) - ours.prepare(padded)(q, k, v)
    assert diff.abs().max() > 1e-6


@needs_nystrom
def test_nystrom_reasons():
    assert nystrom().not_supported_reasons(shape(64, 0, causal=True)) == [NO_CAUSAL]
    (decoding,) = nystrom().not_supported_reasons(shape(64, 0, q_len=4))
    assert "one input" in decoding
    (documents,) = nystrom().not_supported_reasons(shape(64, 0, documents=3))
    assert "3 documents" in documents
    for dtype in (torch.float16, torch.bfloat16):
        (reason,) = nystrom().not_supported_reasons(shape(64, 0, dtype=dtype))
        assert "not supported" in reason
    assert nystrom(65).not_supported_reasons(shape(64, 0)) == [
        "landmarks 65 exceed the sequence length 64"
    ]


# -- a missing package ---------------------------------------------------------------------


@pytest.fixture
def uninstalled(monkeypatch):
    """Both packages fail to import (as where they are not installed), for one test."""
    optional.missing.cache_clear()
    for module in ("performer_pytorch", "nystrom_attention"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    yield
    optional.missing.cache_clear()


@pytest.mark.parametrize(
    ("name", "distribution"),
    [("lucidrains-performer", "performer-pytorch"), ("lucidrains-nystrom", "nystrom-attention")],
)
def test_a_missing_package_is_a_reason(uninstalled, name, distribution):
    cls = get_backend_class(name)  # still registered
    assert cls.implementation == distribution
    reasons = cls().not_supported_reasons(shape(64, 0))
    assert len(reasons) == 1
    assert reasons[0].startswith(f"{distribution} is not installed or does not import")
    assert reasons[0].endswith("pip install -e '.[peers]'")
