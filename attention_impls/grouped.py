"""Grouped-query attention and packed documents in the plain blocked backends.

Grouped-query attention (``harness.measure.inputs``): ``q`` is ``[B, H, M, D]``, ``k`` and ``v``
``[B, Hkv, N, D]``, and key/value head ``g`` serves the ``G = H // Hkv`` consecutive query heads
``g*G .. g*G + G - 1``. A blocked kernel multiplies each block of queries by a block of keys;
``fold_groups`` stacks the ``G`` query heads of one key/value head as extra rows of every query
block, so one matmul against that head's keys serves all ``G`` and k, v are never copied ``G``
times (``repeat_interleave`` would multiply the key neighbour copies by ``G``). The masks, one
per query row of a block, are repeated over the ``G`` stacked copies (``fold_mask``).

Documents: ``other_document`` flags the pairs of a blocked layout whose query and key lie in
different documents; padded query slots (past ``N``) are left alone, so that the padding rules of
each kernel (no all ``-inf`` row) still hold.
"""

from __future__ import annotations

import torch

from harness.measure.inputs import Inputs


def fold_groups(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """``[B, H, *blocks, R, D]`` -> ``[B, Hkv, *blocks, G*R, D]`` (a copy unless ``G == 1``)."""
    groups = x.shape[1] // kv_heads
    if groups == 1:
        return x
    x = x.unflatten(1, (kv_heads, groups))  # [B, Hkv, G, *blocks, R, D]
    return x.movedim(2, -3).flatten(-3, -2)  # [B, Hkv, *blocks, G*R, D]


def unfold_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of ``fold_groups``: ``[B, Hkv, *blocks, G*R, D]`` -> ``[B, H, *blocks, R, D]``."""
    if groups == 1:
        return x
    x = x.unflatten(-2, (groups, -1))  # [B, Hkv, *blocks, G, R, D]
    return x.movedim(-3, 2).flatten(1, 2)  # [B, H, *blocks, R, D]


def fold_mask(mask: torch.Tensor | None, groups: int) -> torch.Tensor | None:
    """A mask over the rows of a block ``[*blocks, R, C]`` for the folded rows ``[*blocks, G*R,
    C]``: the same pattern for each of the ``G`` query heads."""
    if mask is None or groups == 1:
        return mask
    return mask.repeat(*([1] * (mask.dim() - 2)), groups, 1)  # [*blocks, G*R, C]


def padded_documents(inputs: Inputs, length: int, device: torch.device) -> torch.Tensor:
    """The document of every position ``[length]``, ``length >= N``; padded slots get -1."""
    doc = inputs.document_ids(device)  # [N]
    return torch.cat([doc, doc.new_full((length - inputs.seq_len,), -1)])  # [length]


def other_document(
    inputs: Inputs, q_pos: torch.Tensor, k_pos: torch.Tensor, length: int
) -> torch.Tensor | None:
    """Whether query ``q_pos`` and key ``k_pos`` (broadcast positions of a layout ``length >= N``
    long; keys may lie outside it, they are masked elsewhere) lie in different documents; False
    where the query is a padded slot. None for one document."""
    if inputs.documents == 1:
        return None
    doc = padded_documents(inputs, length, q_pos.device)  # [length]
    differ = doc[q_pos.clamp(0, length - 1)] != doc[k_pos.clamp(0, length - 1)]
    return differ & (q_pos < inputs.seq_len)


def kv_share(inputs: Inputs) -> float:
    """The size of a key/value tensor relative to a query-shaped one: ``Hkv / H``."""
    return inputs.kv_heads_count / inputs.heads
