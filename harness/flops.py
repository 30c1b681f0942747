"""Analytic count of the useful floating-point operations of each attention scheme.

Layout ``[batch, heads, seq, head_dim] = [B, H, N, D]``. "Useful" FLOPs are those of the two
matmuls over the (query, key) pairs the pattern actually attends: ``q k^T`` costs ``2 D`` FLOPs
per pair (D multiply-adds) and ``P v`` another ``2 D``, so a forward pass is
``4 * B * H * D * pairs``. The softmax and the sparse bookkeeping (gathers, masks, padding,
hashing, sorting) are not counted: they are the overhead that the useful-FLOP rate exposes.
The backward pass is counted as 2.5x the forward (FlashAttention's convention: dQ, dK, dV and
the recomputed scores), so a forward+backward ("fwdbwd") pass is 3.5x the forward.

``attended_pairs`` gives the pairs per (batch, head) among the N real positions: exact for full
attention, Longformer and BigBird (equal to ``backend.mask(...).sum()``), expected for Reformer,
whose pattern depends on the input values. Pure numpy, O(N): fast at N = 131072.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

BACKWARD_FACTOR = 2.5

# The Params dataclass defaults of each family, so that a params dict missing a key means what it
# means to the backend (a test checks they agree; copied so that this module needs no torch).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "full": {"causal": False},
    "longformer": {"window": 256, "dilation": 1, "global_tokens": (), "causal": False},
    "bigbird": {"block_size": 64, "global_blocks": 1, "random_blocks": 3},
    "reformer": {"n_hashes": 4, "n_buckets": None, "chunk_size": 64, "shared_qk": True},
}


def _int(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _full(n: int, causal: bool) -> int:
    # Every pair, or the lower triangle with its diagonal (query i sees keys 0..i).
    return n * (n + 1) // 2 if causal else n * n


def _longformer(n: int, w: int, d: int, global_tokens: Any, causal: bool) -> int:
    # Same normalisation as attention_impls.longformer.global_positions (negatives from the end).
    glob = np.array(sorted({int(t) % n for t in global_tokens}), dtype=np.int64)  # [G]
    i = np.arange(n, dtype=np.int64)  # [N] query positions
    is_global = np.zeros(n, dtype=bool)
    is_global[glob] = True
    # Window keys j = i + d t, |t| <= w, kept in range: min(w, i // d) on the left, as many on
    # the right as fit before N (none when causal), plus i itself.
    right = 0 if causal else np.minimum(w, (n - 1 - i) // d)
    window = np.minimum(w, i // d) + 1 + right  # [N]
    # Global keys every query also attends (causal: only those at or before it).
    global_keys = np.searchsorted(glob, i, side="right") if causal else len(glob)
    ordinary = ~is_global
    pairs = int((window + global_keys)[ordinary].sum())
    # Global queries attend every key (causal: keys 0..i), which covers their window.
    pairs += int((glob + 1).sum()) if causal else len(glob) * n
    # Inclusion-exclusion: a global key inside an ordinary query's window was counted twice.
    # Key g lies in the window of queries g + d s, s in [-w, w] (causal: [0, w]) in range ...
    gl = 0 if causal else np.minimum(w, glob // d)
    holders = gl + 1 + np.minimum(w, (n - 1 - glob) // d)  # [G]
    # ... minus those queries that are themselves global: same class mod d, class index within
    # w (at or after g when causal); classes are laid out N apart so that ranges never overlap.
    key = (glob % d) * n + glob // d  # [G]
    order = np.sort(key)
    lo = key - (0 if causal else np.minimum(w, glob // d))
    hi = key + np.minimum(w, (n - 1 - glob) // d)
    holders -= np.searchsorted(order, hi, side="right") - np.searchsorted(order, lo, side="left")
    return pairs - int(holders.sum())


def _bigbird(n: int, b: int, g: int, r: int, seed: int) -> int:
    nb = -(-n // b)
    if nb <= 2 * g:  # every block global: dense attention
        return n * n
    size = np.full(nb, b, dtype=np.int64)  # [nb] real positions per block; the last may be short
    size[-1] = n - (nb - 1) * b
    start = np.concatenate([[0], np.cumsum(size)])  # [nb + 1] first position of each block
    global_keys = int(start[g] + (n - start[nb - g]))  # first g and last g blocks
    pairs = global_keys * n  # global query blocks attend every key
    blocks = np.arange(g, nb - g)  # [nq] ordinary query blocks
    # Window blocks I-1, I, I+1 that exist and are not global (those are already counted).
    lo, hi = np.maximum(blocks - 1, g), np.minimum(blocks + 1, nb - g - 1)
    window_keys = start[hi + 1] - start[lo]
    # r random blocks among the ordinary blocks outside the window, all of them if fewer exist.
    drawn = np.minimum(r, (nb - 2 * g) - (hi - lo + 1))
    random_keys = drawn * b
    if g == 0 and r > 0 and size[-1] < b:
        # Only here can a random block be the short last block: the seeded draw decides.
        from attention_impls.bigbird import BigBirdParams, random_block_table

        params = BigBirdParams(block_size=b, global_blocks=g, random_blocks=r)
        table = random_block_table(n, params, seed).numpy()  # [nq, r]
        random_keys = random_keys - (table == nb - 1).any(axis=1) * (b - int(size[-1]))
    keys = global_keys + window_keys + random_keys  # [nq] keys of each ordinary query
    return pairs + int((size[g : nb - g] * keys).sum())


def _reformer(n: int, n_hashes: int, c: int, shared_qk: bool) -> int:
    # Each round, a query scores its own chunk and the previous one of the sorted order: 2c keys,
    # or the whole sequence when it fits in one chunk; shared-QK drops the query itself (it has
    # other keys whenever N >= 2). A pair met in several rounds is counted once per round (the
    # work the scheme does), so this is an upper bound on the distinct pairs of ``mask``; padded
    # slots of the last chunk are also counted as keys. No query exceeds the N (N - 1) keys there.
    own = 1 if shared_qk and n >= 2 else 0
    per_round = (2 * c if -(-n // c) >= 2 else n) - own
    return n * min(n_hashes * per_round, n - own)


def attended_pairs(family: str, params: dict, seq_len: int, seed: int = 0) -> float | None:
    """Attended (query, key) pairs per (batch, head) at length ``seq_len``; None for an unknown
    family. ``params`` is ``backend.params_dict()`` (a missing key takes the default); ``seed``
    only matters for BigBird's random blocks."""
    if family not in _DEFAULTS:
        return None
    p = {**_DEFAULTS[family], **params}
    n = _int(seq_len, "seq_len", 1)
    if family == "full":
        return float(_full(n, bool(p["causal"])))
    if family == "longformer":
        w, d = _int(p["window"], "window", 0), _int(p["dilation"], "dilation", 1)
        return float(_longformer(n, w, d, p["global_tokens"], bool(p["causal"])))
    if family == "bigbird":
        b, g = _int(p["block_size"], "block_size", 1), _int(p["global_blocks"], "global_blocks", 0)
        return float(_bigbird(n, b, g, _int(p["random_blocks"], "random_blocks", 0), seed))
    hashes, c = _int(p["n_hashes"], "n_hashes", 1), _int(p["chunk_size"], "chunk_size", 1)
    return float(_reformer(n, hashes, c, bool(p["shared_qk"])))


def useful_flops(
    family: str,
    params: dict,
    seq_len: int,
    batch: int,
    heads: int,
    head_dim: int,
    pass_: str,
    seed: int = 0,
) -> float | None:
    """Useful FLOPs of one call: ``4 B H D pairs``, times 3.5 for ``pass_ == "fwdbwd"``."""
    if pass_ not in ("fwd", "fwdbwd"):
        raise ValueError(f"pass must be 'fwd' or 'fwdbwd', got {pass_!r}")
    pairs = attended_pairs(family, params, seq_len, seed)
    if pairs is None:
        return None
    forward = 4.0 * batch * heads * head_dim * pairs
    return forward * (1 + BACKWARD_FACTOR) if pass_ == "fwdbwd" else forward


def row_flops(row: Mapping[str, Any]) -> float | None:
    """``useful_flops`` of one results.csv row (values may be strings, as ``csv`` reads them);
    None for an unknown family or pass, params that are not a JSON object, or bad values."""
    try:
        params = row["params"]
        params = json.loads(params) if isinstance(params, str) else params
        if not isinstance(params, dict):
            return None
        ints = {c: int(float(row[c])) for c in ("seq_len", "batch", "heads", "head_dim")}
        seed = row.get("seed")
        seed = 0 if seed in (None, "") else int(float(seed))
        return useful_flops(str(row["family"]), params, pass_=row["pass"], seed=seed, **ints)
    except (KeyError, TypeError, ValueError):  # json.JSONDecodeError is a ValueError
        return None


# Dense (no structured sparsity) FP16/BF16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets
# (half of the "with sparsity" figure they print), keyed by a word of get_device_name().
PEAK_DENSE_HALF_TFLOPS: dict[str, float] = {
    "H100": 989.0,  # H100 SXM5 datasheet, 1,979 sparse; the SXM part is "NVIDIA H100 80GB HBM3"
    "H100 PCIe": 756.0,  # H100 PCIe datasheet, 1,513 sparse
    "H100 NVL": 835.0,  # H100 NVL datasheet, 1,671 sparse
    "H200": 989.0,  # H200 SXM datasheet, 1,979 sparse
    "H200 NVL": 835.0,  # H200 NVL datasheet, 1,671 sparse
    "A100": 312.0,  # A100 datasheet (SXM4 and PCIe alike), 624 sparse
    "L40S": 362.05,  # L40S datasheet, "362.05 | 733" TFLOPS
    "L4": 121.0,  # L4 datasheet, 242 sparse
    "A10": 125.0,  # A10 datasheet, 250 sparse (the AWS A10G differs and is left out)
    "V100": 125.0,  # V100 SXM2 datasheet, FP16 tensor performance (Volta has no sparsity)
    "V100-PCIE": 112.0,  # V100 PCIe datasheet; torch names it "Tesla V100-PCIE-16GB"
    "V100S": 130.0,  # V100S PCIe datasheet
}


def peak_tflops(device_name: str) -> float | None:
    """Dense half-precision peak of a GPU named like ``torch.cuda.get_device_name()``; the most
    specific (longest) matching key wins; None for an unknown device or a CPU."""
    for key in sorted(PEAK_DENSE_HALF_TFLOPS, key=len, reverse=True):
        # A key must be a whole word: "A10" is not the A10G, "L4" not the L40S, "H200" not GH200.
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", device_name, re.I):
            return PEAK_DENSE_HALF_TFLOPS[key]
    return None
