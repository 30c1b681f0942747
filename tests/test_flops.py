"""The family pair counts (``attended_pairs``) against each backend's own ``mask``, the FLOP
arithmetic (``harness.measure.flops``), the stored ``flops`` column, the GPU peak table
(``harness.analyse.flops``), and speed at long lengths."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
import torch

import attention_impls  # noqa: F401  (registers the backends)
from attention_impls.bigbird import BigBirdParams, random_block_table
from harness.analyse.flops import PEAK_DENSE_HALF_TFLOPS, peak_tflops
from harness.measure.case import Case
from harness.measure.flops import BACKWARD_FACTOR, useful_flops
from harness.measure.inputs import Inputs
from harness.measure.registry import backend_names, get_backend_class
from harness.measure.timing import TimingSettings
from harness.store.records import Status


def attended_pairs(name: str, params: dict[str, Any], n: int, seed: int = 0) -> float | None:
    cls = get_backend_class(name)
    return cls(cls.Params(**params)).attended_pairs(n, seed)


def mask_of(
    name: str, params: dict[str, Any], n: int, seed: int = 0, heads: int = 1
) -> torch.Tensor:
    """The backend's ``[B, H, N, N]`` mask (B = 1) on fresh random inputs."""
    cls = get_backend_class(name)
    backend = cls(cls.Params(**params))
    inputs = Inputs(batch=1, heads=heads, seq_len=n, head_dim=8, seed=seed)
    q, k, _ = inputs.make_qkv()
    return backend.mask(inputs, q, k).expand(1, heads, n, n)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_full_is_exact(n: int, causal: bool) -> None:
    params = {"causal": causal}
    for name in ("full-naive", "full-sdpa"):
        assert attended_pairs(name, params, n) == mask_of(name, params, n).sum().item()


# (N, window, dilation, global tokens): dilation 1/2/3 and beyond N, globals negative, duplicate,
# in one another's windows and all of them, a window close to N, a window of zero.
LONGFORMER = [
    (64, 4, 1, ()),
    (64, 4, 2, (0, -1)),
    (65, 3, 3, (5, -1, 64, 5)),
    (37, 5, 3, (0, 3, 6, 9, -1, 30)),
    (50, 48, 1, (0,)),
    (50, 49, 2, (-50, 0, 10, 11)),
    (61, 7, 2, (1, 2, 3, 4, 5, -2)),
    (20, 2, 25, (1,)),
    (16, 2, 1, tuple(range(16))),
    (33, 0, 1, (4, -4)),
    (2, 1, 1, ()),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "w", "d", "glob"), LONGFORMER)
def test_longformer_is_exact(n: int, w: int, d: int, glob: tuple[int, ...], causal: bool) -> None:
    params = {"window": w, "dilation": d, "global_tokens": glob, "causal": causal}
    expected = mask_of("longformer", params, n).sum().item()
    assert attended_pairs("longformer", params, n) == expected
    # as read back from results.csv (format 1 upgrades): a JSON list instead of a tuple
    assert attended_pairs("longformer", json.loads(json.dumps(params)), n) == expected


# (N, block, g, r, seed): lengths b divides and not, g = 0 / 1 / 2, r = 0 / 3 / beyond the blocks
# available, nb <= 2g (dense), a single partial block, g = 0 with a short last block (the only
# case where the random draw changes the count: several seeds).
BIGBIRD = [
    (256, 16, 1, 3, 0),
    (100, 16, 1, 3, 0),
    (256, 16, 0, 2, 0),
    (200, 16, 2, 1, 0),
    (160, 16, 1, 0, 0),
    (128, 16, 1, 20, 0),
    (64, 16, 2, 3, 0),
    (40, 16, 2, 1, 0),
    (37, 5, 0, 0, 0),
    (17, 16, 0, 3, 0),
    (12, 16, 0, 3, 0),
    (33, 16, 0, 3, 0),
    *[(103, 8, 0, 3, seed) for seed in range(6)],
    *[(70, 7, 0, 3, seed) for seed in range(3)],
    (1000, 32, 1, 3, 5),
    (1000, 32, 2, 3, 5),
]


@pytest.mark.parametrize(("n", "b", "g", "r", "seed"), BIGBIRD)
def test_bigbird_is_exact(n: int, b: int, g: int, r: int, seed: int) -> None:
    params = {"block_size": b, "global_blocks": g, "random_blocks": r}
    expected = mask_of("bigbird", params, n, seed=seed).sum().item()
    assert attended_pairs("bigbird", params, n, seed=seed) == expected


def test_bigbird_grid_draws_the_short_last_block() -> None:
    """The grid above must include the case where a random block is the partial last block."""
    hits = 0
    for n, b, g, r, seed in BIGBIRD:
        nb = math.ceil(n / b)
        if g == 0 and r and n % b:
            table = random_block_table(n, BigBirdParams(b, g, r), seed)
            hits += int((table == nb - 1).any())
    assert hits > 0


# (N, chunk, hashes, shared_qk, buckets): several chunks, one chunk, two chunks (the cap on N keys
# binds), shared-QK on and off; lengths the chunk size divides.
REFORMER = [
    (128, 16, 2, True, None),
    (128, 16, 3, False, None),
    (128, 32, 1, True, 4),
    (64, 32, 4, True, None),
    (64, 32, 2, False, None),
    (48, 64, 2, True, None),
    (48, 64, 3, False, None),
]


@pytest.mark.parametrize(("n", "c", "hashes", "shared", "buckets"), REFORMER)
def test_reformer_bounds_distinct_pairs(
    n: int, c: int, hashes: int, shared: bool, buckets: int | None
) -> None:
    params = {"n_hashes": hashes, "chunk_size": c, "shared_qk": shared, "n_buckets": buckets}
    formula = attended_pairs("reformer", params, n)
    assert formula is not None
    for distinct in mask_of("reformer", params, n, heads=3).sum(dim=(-1, -2)).flatten().tolist():
        assert formula / hashes <= distinct <= formula


@pytest.mark.parametrize(("n", "c", "hashes", "shared"), [(100, 16, 2, True), (70, 32, 3, False)])
def test_reformer_upper_bound_when_padded(n: int, c: int, hashes: int, shared: bool) -> None:
    params = {"n_hashes": hashes, "chunk_size": c, "shared_qk": shared}
    formula = attended_pairs("reformer", params, n)
    assert formula is not None
    assert mask_of("reformer", params, n, heads=3).sum(dim=(-1, -2)).max().item() <= formula


def test_reformer_formula() -> None:
    # 4 rounds of 2c - 1 keys: 4 * 127 = 508 per query, below the N - 1 = 4095 others.
    assert attended_pairs("reformer", {}, 4096) == 4096 * 4 * 127
    # one chunk: N keys a round, capped at N - 1 distinct others (shared-QK) or N
    assert attended_pairs("reformer", {"chunk_size": 64, "shared_qk": True}, 50) == 50 * 49
    assert attended_pairs("reformer", {"chunk_size": 64, "shared_qk": False}, 50) == 50 * 50
    assert attended_pairs("reformer", {}, 1) == 1


def test_every_backend_shares_its_family_count() -> None:
    """Kernels of a family count what its plain backend counts (they hold the same pattern)."""
    plain = {"full": "full-naive", "longformer": "longformer", "bigbird": "bigbird",
             "reformer": "reformer"}  # fmt: skip
    for name in backend_names():
        cls = get_backend_class(name)
        backend = cls()
        # a peer counts the pattern it really computes (HF BigBird's own random plan, whole
        # buckets without globals): against its own mask in its tests (tests/test_peer*.py)
        if cls.family in plain and cls.implementation == "ours":
            reference = get_backend_class(plain[cls.family])()
            assert backend.attended_pairs(1000, 0) == reference.attended_pairs(1000, 0), name
        assert backend.promise is not None, name


def test_flops_arithmetic() -> None:
    pairs = attended_pairs("longformer", {"window": 8, "global_tokens": (0, -1)}, 512)
    assert pairs is not None
    fwd = useful_flops(pairs, 2, 3, 64, "fwd")
    assert fwd == 4 * 2 * 3 * 64 * pairs
    assert useful_flops(pairs, 2, 3, 64, "fwdbwd") == 3.5 * fwd
    assert BACKWARD_FACTOR == 2.5
    assert useful_flops(float(1024**2), 1, 1, 64, "fwd") == 4 * 64 * 1024**2
    assert useful_flops(None, 1, 1, 64, "fwd") is None
    # FlashAttention's convention per mode: the training forward counts as a forward, the
    # backward alone as 2.5 of them
    assert useful_flops(pairs, 2, 3, 64, "fwd-grad") == fwd
    assert useful_flops(pairs, 2, 3, 64, "bwd") == 2.5 * fwd
    with pytest.raises(ValueError):
        useful_flops(1.0, 1, 1, 64, "backward")


def test_counted_pairs_follow_decoding_and_documents() -> None:
    """Where the family's formula does not apply, the case's pairs are the reference mask's:
    decoding keeps the last queries' rows of the causal triangle, documents the blocks."""
    full = get_backend_class("full-naive")
    causal = full(full.Params(causal=True))
    n, m = 300, 7
    decode = Inputs(1, 2, n, 8, q_len=m, causal=True)
    # query r sits at position n - m + r and sees keys 0 .. n - m + r
    assert causal.case_pairs(decode) == sum(n - m + r + 1 for r in range(m))
    docs = Inputs(1, 2, n, 8, documents=5, seed=4)
    lengths = docs.document_lengths()
    assert sum(lengths) == n and len(lengths) == 5 and min(lengths) >= 1
    assert full().case_pairs(docs) == sum(length * length for length in lengths)
    both = Inputs(1, 2, n, 8, documents=5, seed=4, causal=True)
    assert causal.case_pairs(both) == sum(length * (length + 1) // 2 for length in lengths)


def test_rows_store_flops_and_facts() -> None:
    """What the sweep stores for analysis: FLOPs, promise, sparse, yardstick."""
    cls = get_backend_class("bigbird")
    backend = cls(cls.Params(block_size=32, global_blocks=0, random_blocks=3))
    inputs = Inputs(batch=2, heads=4, seq_len=1000, head_dim=64, seed=3, requires_grad=True)
    row = Case(backend, inputs, "fwdbwd", TimingSettings(), 8).result({"status": Status.OK})
    pairs = backend.attended_pairs(1000, 3, heads=4)  # the mean of the 4 heads' random plans
    assert row.flops == useful_flops(pairs, 2, 4, 64, "fwdbwd")
    assert (row.promise, row.sparse, row.yardstick) == ("O(n)", True, False)
    naive = Case(get_backend_class("full-naive")(), inputs, "fwd", TimingSettings(), 8).result(
        {"status": Status.OK}
    )
    assert naive.flops == 4 * 2 * 4 * 64 * 1000**2
    assert (naive.promise, naive.sparse, naive.yardstick) == ("O(n²)", False, True)


def test_peak_tflops() -> None:
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H100 NVL") == PEAK_DENSE_HALF_TFLOPS["H100 NVL"]
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == peak_tflops("NVIDIA A100 80GB PCIe") == 312.0
    assert peak_tflops("Tesla V100-SXM2-16GB") == 125.0
    assert peak_tflops("Tesla V100-PCIE-32GB") == 112.0
    assert peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("NVIDIA L40S") == 362.05
    # a key is a whole word, not any substring
    assert peak_tflops("NVIDIA A10G") is None
    assert peak_tflops("NVIDIA GH200 480GB") is None
    for name in ("cpu", "", "AMD EPYC 7B13", "NVIDIA GeForce RTX 4090"):
        assert peak_tflops(name) is None


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("longformer", {"window": 256, "dilation": 2, "global_tokens": [0, 1, 2, 64, -1]}),
        ("longformer", {"window": 512, "global_tokens": list(range(0, 4096, 7)), "causal": True}),
        ("bigbird", {"block_size": 64, "global_blocks": 1, "random_blocks": 3}),
        ("bigbird", {"block_size": 100, "global_blocks": 0, "random_blocks": 3}),
    ],
)
def test_fast_at_long_lengths(name: str, params: dict[str, Any]) -> None:
    start = time.perf_counter()
    pairs = attended_pairs(name, params, 131072)
    assert time.perf_counter() - start < 0.5
    assert pairs is not None and 0 < pairs < 131072**2


def test_import_does_not_load_the_backends() -> None:
    """Reports import the peak table without torch."""
    import subprocess
    import sys

    code = "import sys, harness.analyse.flops; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
