"""lucidrains' local-attention as peers: exact windows against our Longformer window, whole buckets
against our BigBird window without global or random blocks; outputs and gradients against the
dense reference at lengths that need its autopad, the autopad deviation shown, and refusals."""

from __future__ import annotations

import pytest
import torch

from attention_impls.bigbird import BigBird, BigBirdParams
from attention_impls.longformer import Longformer, LongformerParams
from attention_impls.peers import optional
from attention_impls.peers.lucidrains_local import LucidrainsLocal, LucidrainsLocalBlocks
from harness.measure.inputs import Inputs
from harness.measure.reference import masked_attention
from tests.backend_checks import assert_matches_reference, largest_intermediate

pytestmark = pytest.mark.skipif(
    optional.missing("local_attention", "local-attention") is not None,
    reason="local-attention is not installed (the peers extra)",
)


def exact(window: int, causal: bool = False) -> LucidrainsLocal:
    return LucidrainsLocal(LucidrainsLocal.Params(window=window, causal=causal))


def blocks(size: int) -> LucidrainsLocalBlocks:
    return LucidrainsLocalBlocks(LucidrainsLocalBlocks.Params(block_size=size))


# (N, W): 50, 37 and 129 are no multiple of W: the library's autopad
CASES = [(64, 8), (50, 8), (50, 7), (37, 16), (129, 4)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "window"), CASES)
def test_exact_windows_are_our_longformer_window(n, window, causal):
    backend, inputs = exact(window, causal), Inputs(2, 2, n, 8, seed=n)
    mask = assert_matches_reference(backend, inputs)
    q, k, _ = inputs.make_qkv()
    ours = Longformer(LongformerParams(window=window, causal=causal)).mask(inputs, q, k)
    assert torch.equal(mask[0, 0], ours[0, 0])
    assert backend.attended_pairs(n) == mask[0, 0].sum().item() == ours.sum().item()


@pytest.mark.parametrize(("n", "size"), CASES)
def test_whole_buckets_are_our_bigbird_window(n, size):
    backend, inputs = blocks(size), Inputs(2, 2, n, 8, seed=n)
    mask = assert_matches_reference(backend, inputs)
    q, k, _ = inputs.make_qkv()
    ours = BigBird(BigBirdParams(block_size=size, global_blocks=0, random_blocks=0))
    assert torch.equal(mask[0, 0], ours.mask(inputs, q, k)[0, 0])
    assert backend.attended_pairs(n) == mask[0, 0].sum().item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    precise = dtype == torch.float64
    tol = 1e-9 if precise else 2e-2
    assert_matches_reference(exact(8), Inputs(1, 2, 100, 16, dtype=dtype), tol, tol, precise)


@pytest.mark.parametrize("exact_windows", [True, False])
def test_autopad_alone_lets_the_padding_into_the_softmax(exact_windows):
    """Without a key mask, autopad's zero keys score 0 in the last queries' softmax: the reason
    the closure passes one where N is no multiple of W."""
    from local_attention import LocalAttention

    n, w = 50, 8
    inputs = Inputs(1, 2, n, 8, seed=1)
    q, k, v = inputs.make_qkv()
    attn = LocalAttention(window_size=w, look_forward=1, exact_windowsize=exact_windows,
                          autopad=True)  # fmt: skip
    backend = exact(w) if exact_windows else blocks(w)
    reference = masked_attention(q, k, v, backend.mask(inputs, q, k), compute_dtype=q.dtype)
    unmasked = attn(q, k, v)
    assert (unmasked - reference)[:, :, -4:].abs().max() > 1e-3  # the last queries
    torch.testing.assert_close(backend.prepare(inputs)(q, k, v), reference)


@pytest.mark.parametrize("backend", [exact(16, causal=True), blocks(16)], ids=["exact", "blocks"])
def test_holds_no_quadratic_tensor(backend):
    n = 2048
    largest = largest_intermediate(backend, Inputs(1, 1, n, 16, requires_grad=True))
    assert 0 < largest < n * n // 4


@pytest.mark.parametrize(
    ("backend", "inputs", "fragment"),
    [
        (exact(8), Inputs(1, 4, 64, 8, kv_heads=2), "no grouped-query attention"),
        (exact(8), Inputs(1, 2, 64, 8, q_len=1), "no query length"),
        (exact(8), Inputs(1, 2, 64, 8, documents=2), "no packed documents"),
        (exact(64), Inputs(1, 2, 64, 8), "window size 64 must be at most 63 at length 64"),
        (blocks(65), Inputs(1, 2, 64, 8), "window size 65 must be at most 64 at length 64"),
        (blocks(8), Inputs(1, 2, 64, 8, causal=True), "causal buckets"),
        (blocks(8), Inputs(1, 2, 64, 8, causal=True), "bigbird has no causal variant"),
    ],
)
def test_refusals(backend, inputs, fragment):
    reasons = backend.not_supported_reasons(inputs)
    assert any(fragment in r for r in reasons), reasons


def test_causal_exact_windows_run():
    assert exact(8, causal=True).not_supported_reasons(Inputs(1, 2, 64, 8, causal=True)) == []


@pytest.mark.parametrize("backend", [exact(8), blocks(8)], ids=["exact", "blocks"])
def test_a_missing_package_is_a_reason(backend, monkeypatch):
    inputs = Inputs(1, 2, 64, 8)
    assert backend.not_supported_reasons(inputs) == []
    reason = "local-attention is not installed or does not import (...); pip install ..."
    monkeypatch.setattr(optional, "missing", lambda module, distribution, extra="peers": reason)
    assert backend.not_supported_reasons(inputs) == [reason]


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [exact(8, causal=True), blocks(8)], ids=["exact", "blocks"])
def test_matches_reference_cuda(backend):
    # Looser: GPU kernels reduce in other orders than the dense reference's matmul.
    assert_matches_reference(backend, Inputs(2, 2, 100, 16, device="cuda"), 1e-4, 1e-4)
