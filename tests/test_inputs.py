"""The input distributions (``harness.measure.inputs``, ``harness.store.distributions``): the
Gaussian one draws what it always drew; the structured one is reproducible from the seed, never
zero, of unit scale, smooth along the sequence, with heavy-hitter keys that every query attends,
and keeps its structure across grouped-query heads and decoding queries."""

from __future__ import annotations

import math

import pytest
import torch

from harness.measure.inputs import Inputs, ar1
from harness.store import distributions as dist

CORR_LENGTH = dist.CORRELATION_LENGTH


def structured(**kw) -> Inputs:
    shape = {"batch": 2, "heads": 4, "seq_len": 1024, "head_dim": 64, "seed": 3, **kw}
    return Inputs(**shape, distribution="structured")


def along(x: torch.Tensor) -> torch.Tensor:
    """``x`` less each head's mean over the positions (the queries' shared component ``u``)."""
    return x - x.mean(dim=-2, keepdim=True)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


def lag_corr(x: torch.Tensor, lag: int) -> float:
    """Pearson correlation along the sequence of each element with the one ``lag`` positions
    on."""
    x = along(x)
    return corr(x[..., : x.shape[-2] - lag, :], x[..., lag:, :])


def test_gaussian_inputs_are_what_every_run_before_drew():
    inputs = Inputs(1, 4, 96, 16, seed=7, kv_heads=2, q_len=32)
    gen = torch.Generator().manual_seed(7)
    expected = [torch.randn(s, generator=gen) for s in (inputs.shape, *[inputs.kv_shape] * 2)]
    for got, want in zip(inputs.make_qkv(), expected, strict=True):
        assert torch.equal(got, want)


def test_structured_inputs_are_reproducible_from_the_seed():
    first, again = structured().make_qkv(), structured().make_qkv()
    other = structured(seed=4).make_qkv()
    for a, b, c in zip(first, again, other, strict=True):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)
    gaussian = Inputs(2, 4, 1024, 64, seed=3).make_qkv()
    assert not any(torch.allclose(a, g) for a, g in zip(first, gaussian, strict=True))


@pytest.mark.parametrize("which", [0, 1, 2], ids=["q", "k", "v"])
def test_unit_scale_and_never_zero(which):
    x = structured().make_qkv()[which]
    assert torch.isfinite(x).all() and (x != 0).all()
    assert abs(x.mean().item()) < 0.05
    assert 0.9 < x.std().item() < 1.15  # as the Gaussian's: 1/sqrt(D) keeps its meaning


@pytest.mark.parametrize("which", [0, 1, 2], ids=["q", "k", "v"])
def test_neighbouring_positions_are_correlated_far_ones_not(which):
    # long enough that centring each series (``along``) biases the correlations little (-0.01)
    x = structured(seq_len=4096).make_qkv()[which]
    near, at_length, far = lag_corr(x, 1), lag_corr(x, int(CORR_LENGTH)), lag_corr(x, 2048)
    rho = dist.rho()
    # the smooth half of the variance carries rho^lag; the heavy hitters (k) dilute it a little
    assert near == pytest.approx(dist.SMOOTH_SHARE * rho, abs=0.04)
    assert at_length == pytest.approx(dist.SMOOTH_SHARE * math.exp(-1), abs=0.04)
    assert abs(far) < 0.03 and near > at_length > 4 * abs(far)
    gaussian = Inputs(2, 4, 1024, 64, seed=3).make_qkv()[which]
    assert abs(lag_corr(gaussian, 1)) < 0.03


def test_the_heavy_hitters_have_the_largest_key_norms_position_0_among_them():
    inputs = structured(heads=4, kv_heads=2)
    _, k, _ = inputs.make_qkv()
    norms = k.norm(dim=-1)  # [B, Hkv, N]
    top = norms.topk(dist.HEAVY_HITTERS, dim=-1).indices.sort(dim=-1).values
    # the same positions in every batch element and head, position 0 (the sink) among them
    assert (top == top[0, 0]).all() and top[0, 0, 0].item() == 0
    hitters = top[0, 0]
    rest = norms[..., [i for i in range(inputs.seq_len) if i not in set(hitters.tolist())]]
    assert norms[..., hitters].min() > 2.5 * rest.median() and rest.max() < 1.5 * rest.median()


def test_full_attention_on_them_is_local_and_drawn_to_the_heavy_hitters():
    """What makes them structured: the share of each query's weight that full attention gives
    the heavy hitters and the keys within two correlation lengths, against Gaussian inputs; and
    so a window that keeps the heavy hitters is close to full attention, one without them not."""

    def shares(inputs: Inputs) -> tuple[float, float, float, float]:
        q, k, v = inputs.make_qkv()
        scores = q @ k.transpose(-1, -2) * inputs.scale  # [B, H, N, N]
        hitters = k.norm(dim=-1)[0, 0].topk(dist.HEAVY_HITTERS).indices
        pos = torch.arange(inputs.seq_len)
        near = (pos[:, None] - pos[None, :]).abs() <= 2 * CORR_LENGTH
        p = scores.softmax(-1)
        full = p @ v

        def error(allowed: torch.Tensor) -> float:
            out = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
            return ((out - full).norm() / full.norm()).item()

        with_hitters = near.clone()
        with_hitters[:, hitters] = True
        return (p[..., hitters].sum(-1).mean().item(), (p * near).sum(-1).mean().item(),
                error(near), error(with_hitters))  # fmt: skip

    hitters, near, window, window_hitters = shares(structured(batch=1))
    hitters_g, near_g, window_g, window_hitters_g = shares(Inputs(1, 4, 1024, 64, seed=3))
    assert hitters > 0.5 and hitters > 100 * hitters_g
    assert near > 0.35 and near > 2.5 * near_g
    assert window_hitters < 0.2 < 0.5 < window  # the heavy hitters are what a window misses
    assert window_hitters_g > 1 and window_g > 1  # on Gaussian inputs any window misses most


def test_grouped_query_heads_share_their_key_value_head_s_sequence():
    inputs = structured(batch=1, heads=4, kv_heads=2)
    q, k, _ = inputs.make_qkv()
    assert q.shape == (1, 4, 1024, 64) and k.shape == (1, 2, 1024, 64)
    # each query against the key at its position, of its own key/value head and of the other
    same = [corr(q[0, h], k[0, h // 2]) for h in range(4)]
    other = [corr(q[0, h], k[0, 1 - h // 2]) for h in range(4)]
    assert all(s > 0.35 for s in same) and all(abs(o) < 0.05 for o in other), (same, other)


def test_decoding_queries_are_the_last_positions_of_the_same_sequence():
    full = structured(batch=1, seq_len=512, kv_heads=2)
    decode = structured(batch=1, seq_len=512, kv_heads=2, q_len=64)
    (qf, kf, vf), (qd, kd, vd) = full.make_qkv(), decode.make_qkv()
    assert qd.shape == (1, 4, 64, 64)
    assert torch.equal(kf, kd) and torch.equal(vf, vd) and torch.equal(qd, qf[:, :, -64:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_any_dtype_and_autograd(dtype):
    inputs = structured(batch=1, seq_len=100, head_dim=16, dtype=dtype, requires_grad=True)
    for x in inputs.make_qkv():
        assert x.dtype == dtype and x.requires_grad and x.is_leaf and (x != 0).all()


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_short_sequences_have_fewer_heavy_hitters(n):
    _, k, _ = structured(batch=1, seq_len=n, head_dim=16).make_qkv()
    assert k.shape[-2] == n and torch.isfinite(k).all()
    assert k[0, 0].norm(dim=-1).argmax().item() < n


def test_ar1_is_the_recurrence():
    rho, noise = 0.9, torch.randn(3, 300, 2, generator=torch.Generator().manual_seed(1))
    expected = [noise[:, 0]]
    for t in range(1, 300):
        expected.append(rho * expected[-1] + math.sqrt(1 - rho**2) * noise[:, t])
    assert torch.allclose(ar1(noise, rho), torch.stack(expected, dim=1), atol=1e-5)


def test_an_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="unknown input distribution 'uniform'"):
        Inputs(1, 1, 8, 4, distribution="uniform")


def test_every_distribution_is_described_with_its_constants():
    assert set(dist.DESCRIPTIONS) == set(dist.NAMES)
    text = dist.description("structured")
    for number in (dist.CORRELATION_LENGTH, dist.HITTER_NORM, dist.QUERY_PULL):
        assert f"{number:g}" in text
    assert dist.description("from-the-future") == "from-the-future"
