"""Reformer's hashing (Kitaev, Kaiser and Levskaya, 2020, "Reformer: The Efficient Transformer",
ICLR, arXiv:2001.04451, sec. 3): angular LSH by random rotations, the sort by (bucket, position)
that cuts each round into chunks, and the keys shared-QK derives from q. Shared by
``Reformer.mask``, the plain kernel and flex-reformer, so that all three see the same chunks;
the pattern on those chunks is ``attention_impls.reformer.meets``. Layout ``[B, H, N, D]`` as
in ``harness.measure.backend``.

The rotations are drawn on CPU from a generator seeded with ``inputs.seed``, round by round, the
same on every device. Hashing runs one round and one slice of tokens at a time, so that its
``[.., N, n_buckets / 2]`` projection never exceeds the chunk scores; its time still grows as
N^2 D / c, since the default bucket count follows N.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from harness.measure.inputs import Inputs

if TYPE_CHECKING:  # the family's module imports this one
    from attention_impls.reformer import ReformerParams


ROTATION_STREAM = 0x4C534852  # "LSHR": the rotations' generator is seeded with seed XOR this


def num_buckets(params: ReformerParams, seq_len: int) -> int:
    """``n_buckets``, or by default ``max(2, 2 round(K N / 2c))`` for ``K = buckets_per_chunk``
    (2: the paper's ``2 N / c``, half a chunk per bucket)."""
    if params.n_buckets is not None:
        return params.n_buckets
    return max(2, 2 * round(params.buckets_per_chunk * seq_len / (2 * params.chunk_size)))


def unit_keys(q: torch.Tensor) -> torch.Tensor:
    """The shared-QK keys ``q / ||q||`` (zero rows, such as padding, stay zero instead of NaN)."""
    return F.normalize(q, dim=-1)


def rotations(inputs: Inputs, params: ReformerParams) -> torch.Tensor:
    """The random rotations ``[H, D, n_hashes, n_buckets / 2]``, the same on every device.

    Drawn round by round, so the rounds of a smaller ``n_hashes`` are the first rounds of a
    larger one (and its neighbourhoods a subset).
    """
    # CPU: identical draws on every device. A stream of its own: drawn from inputs.seed itself,
    # the rotations were q's first elements (head 0, round 0 hashed q[0, 0, 0] against itself)
    gen = torch.Generator().manual_seed(inputs.seed ^ ROTATION_STREAM)
    half = num_buckets(params, inputs.seq_len) // 2
    shape = (params.n_hashes, inputs.heads, inputs.head_dim, half)
    rot = torch.randn(shape, generator=gen).permute(1, 2, 0, 3)  # [H, D, R, half]
    return rot.to(device=inputs.device, dtype=inputs.dtype)


def lsh_buckets(x: torch.Tensor, rot: torch.Tensor, max_elements: int) -> torch.Tensor:
    """Bucket of every token of ``x`` ``[B, H, N, D]`` in every round: ``[B, H, n_hashes, N]``.

    The projection ``[.., N, n_buckets / 2]`` grows as N^2 / c when the bucket count follows N,
    so it is made one round and at most ``max_elements`` (per batch and head) at a time.
    """
    half = rot.shape[-1]
    step = max(1, max_elements // half)  # tokens per slice
    rounds = []
    for r in range(rot.shape[2]):
        slices = []
        for part in x.split(step, dim=2):  # [B, H, step, D]
            proj = part @ rot[:, :, r]  # [B, H, step, half]
            top, top_idx = proj.max(dim=-1)
            low, low_idx = proj.min(dim=-1)
            # argmax of [proj ; -proj] without building it; a tie goes to the first half
            slices.append(torch.where(top >= -low, top_idx, low_idx + half))
        rounds.append(torch.cat(slices, dim=-1))  # [B, H, N]
    return torch.stack(rounds, dim=2)  # [B, H, R, N]


def lsh_sort(
    x: torch.Tensor, rot: torch.Tensor, n_pad: int, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort ``x`` ``[B, H, N, D]`` by (bucket, position) in every round, padded to ``n_pad``.

    Returns ``perm`` (sorted slot -> token) and ``slot`` (token -> sorted slot), both
    ``[B, H, n_hashes, n_pad]``. Shared by the closure and ``mask`` so both see the same chunks.
    """
    with torch.no_grad():
        n, n_buckets = x.shape[2], 2 * rot.shape[-1]
        pos = torch.arange(n_pad, device=x.device)
        # padded tokens take the extra bucket n_buckets: they sort after every real token
        # the chunk scores hold n_pad * 2c numbers per round: hashing needs no more than that
        buckets = lsh_buckets(x, rot, max_elements=2 * n_pad * chunk_size)  # [B, H, R, N]
        buckets = F.pad(buckets, (0, n_pad - n), value=n_buckets)  # [B, H, R, Np]
        perm = (buckets * n_pad + pos).argsort(dim=-1)  # [B, H, R, Np]
        slot = torch.empty_like(perm).scatter_(-1, perm, pos.expand_as(perm))  # [B, H, R, Np]
    return perm, slot
