"""Longformer's global attention with projections of its own (Beltagy, Peters and Cohan, 2020,
"Longformer: The Long-Document Transformer", arXiv:2004.05150, section 3.1, "Linear Projections
for Global Attention": "we use two sets of projections, Q_s, K_s, V_s to compute attention
scores of sliding window attention, and Q_g, K_g, V_g to compute attention scores for the global
attention"). Layout ``[B, H, N, D]`` as in ``harness.measure.backend``.

Which projection each term reads, as HuggingFace transformers computes it
(``models/longformer/modeling_longformer.py``, ``LongformerSelfAttention``, transformers 5.25):

- a non-global query attends its window *and the global keys* with the ordinary projections:
  ``forward`` scores the window with ``self.query``/``self.key``, and
  ``_concat_with_global_key_attn_probs`` the global columns with the same ``key_vectors``;
  ``_compute_attn_output_with_global_indices`` takes their values from ``value_vectors``;
- a global query's output is recomputed and overwrites its row
  (``_compute_global_attn_output_from_hidden``): ``query_global`` of the global rows only,
  ``key_global`` and ``value_global`` of every position, scores divided by ``sqrt(head_dim)``,
  one softmax over every (unpadded) key: ``softmax(Qg_g Kg^T / sqrt(D)) Vg``.

The benchmark passes the kernel q, k and v only, so ``--separate-global-qkv`` derives the
global set from them: ``qg = q Wq`` for the global query rows, ``kg = k Wk`` and ``vg = v Wv``
for every key, with ``D x D`` matrices drawn once per shape from ``inputs.seed`` (a stream of
their own, standard normal over ``sqrt(D)``, so that the projections keep the inputs' scale).
They stand in for a model's trained ``Wg``: the cost is the point, ``O(N D^2)`` for ``kg`` and
``vg``, timed in the call and counted in ``forward_flops`` (``projection_flops``). Causal and
packed documents restrict the global rows as they restrict the pattern (a global token is
global within its document).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.measure.inputs import Inputs

Projections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
STREAM = 0x4C6F6E67  # "Long": the projections' generator is seeded apart from the inputs'


def global_projections(inputs: Inputs) -> Projections:
    """``Wq, Wk, Wv`` ``[D, D]`` each, in the inputs' dtype and device, the same on every device
    (drawn on CPU) and for every call with this seed."""
    gen = torch.Generator().manual_seed(inputs.seed ^ STREAM)
    d = inputs.head_dim
    w = torch.randn(3, d, d, generator=gen) * d**-0.5  # [3, D, D]
    wq, wk, wv = w.to(device=inputs.device, dtype=inputs.dtype).unbind(0)
    return wq, wk, wv


def project(proj: Projections, q_rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """``(q_rows Wq, k Wk, v Wv)``: the global queries, keys and values."""
    wq, wk, wv = proj
    return q_rows @ wq, k @ wk, v @ wv


def global_query_rows(inputs: Inputs, gpos: list[int]) -> list[int]:
    """The rows of q (of its M) that are global positions."""
    return [p - inputs.query_offset for p in gpos if p >= inputs.query_offset]


def projection_flops(inputs: Inputs, global_rows: int) -> float:
    """FLOPs of the projections in one forward call: ``2 D^2`` per projected vector, the
    ``B H Gq`` global queries and, where there is one, ``B Hkv N`` keys and as many values."""
    if global_rows == 0:
        return 0.0
    vectors = inputs.batch * (
        inputs.heads * global_rows + 2 * inputs.kv_heads_count * inputs.seq_len
    )
    return 2.0 * inputs.head_dim**2 * vectors


def global_rows_fn(
    inputs: Inputs, gpos: list[int], causal: bool
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``replace(out, q, k, v)``: ``out`` with its global query rows recomputed from the
    projected q, k, v (fused SDPA over ``[B, H, Gq, N]``); None where no query row is global.
    For kernels that compute every row with the ordinary q, k, v (``flex-longformer``)."""
    dev = torch.device(inputs.device)
    rows = torch.tensor(global_query_rows(inputs, gpos), dtype=torch.long, device=dev)  # [Gq]
    if rows.numel() == 0:
        return None
    pos, keys = rows + inputs.query_offset, torch.arange(inputs.seq_len, device=dev)
    keep = torch.ones(rows.numel(), inputs.seq_len, dtype=torch.bool, device=dev)  # [Gq, N]
    if causal:
        keep &= keys <= pos[:, None]
    if inputs.documents > 1:
        doc = inputs.document_ids(dev)  # [N]
        keep &= doc[pos][:, None] == doc
    proj, scale, gqa = global_projections(inputs), inputs.scale, inputs.grouped

    def replace(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        qg, kg, vg = project(proj, q[:, :, rows], k, v)  # [B, H, Gq, D], [B, Hkv, N, D] x 2
        dense = F.scaled_dot_product_attention(
            qg, kg, vg, attn_mask=keep, scale=scale, enable_gqa=gqa
        )  # [B, H, Gq, D]
        return out.index_copy(2, rows, dense)  # [B, H, M, D]

    return replace


def separate_reference(
    inputs: Inputs,
    gpos: list[int],
    mask: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rows: torch.Tensor,
    compute_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Dense, differentiable: softmax attention under ``mask`` (the case's pattern, ``[.., R, N]``
    for query rows ``rows``) with the ordinary q, k, v, except the global rows, whose output is
    softmax attention under the same mask (every key, less causal and other documents) with the
    projected ``qg, kg, vg``: the same matrices the kernels draw."""
    from harness.measure.reference import masked_attention

    out = masked_attention(q, k, v, mask, rows, compute_dtype)  # [B, H, R, D]
    dtype = out.dtype
    proj = tuple(w.to(device=q.device, dtype=dtype) for w in global_projections(inputs))
    qg, kg, vg = project(proj, q[:, :, rows].to(dtype), k.to(dtype), v.to(dtype))
    glob = masked_attention(qg, kg, vg, mask, None, dtype)  # [B, H, R, D]
    positions = rows.to(q.device) + inputs.query_offset
    is_global = torch.isin(positions, torch.tensor(gpos, dtype=torch.long, device=q.device))
    return torch.where(is_global[:, None], glob, out)  # [B, H, R, D]
