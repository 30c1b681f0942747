"""Linear attention (Katharopoulos, Vyas, Pappas and Fleuret, 2020, "Transformers are RNNs: Fast
Autoregressive Transformers with Linear Attention", ICML, arXiv:2006.16236, sections 3.2-3.4).
Layout ``[B, H, N, D]`` as in ``harness.measure.backend``; q and the output ``[B, H, M, D]``, k
and v ``[B, Hkv, N, D]``.

The softmax kernel ``exp(q k^T / sqrt(D))`` is replaced by ``phi(q)^T phi(k)`` with the feature
map ``phi(x) = elu(x) + 1`` (eq. 7; unscaled, as in the paper and its code), so that the sums
over keys factor out of the queries (eq. 5)::

    out_i = phi(q_i)^T S / phi(q_i)^T z,   S = sum_j phi(k_j) v_j^T  [D, D],   z = sum_j phi(k_j)

over the keys ``j`` query ``i`` sees: all of them, or ``j <= i`` when causal (eq. 8-10: the
sums become prefix sums, the RNN of section 3.4). ``S`` and ``z`` are one product here:
``phi(K)^T [V, 1]``, ``[D, D + 1]``, its last column ``z``.

Implementation, O(N D^2) time and O(N (c + D^2 / c)) memory, never ``[N, N]`` nor a ``[D, D]``
state per position:
- Not causal, one document: ``S`` over all keys, one matmul; each query reads it.
- Otherwise, chunked: the query rows are cut into blocks of ``c = query_chunk``, each against the
  keys at the same positions. Within a block, a small ``[c, c]`` product ``phi(Q_I) phi(K_I)^T``
  under the block's mask (causal, same document); across blocks, the state ``S_I`` of the keys
  before the block, an exclusive cumulative sum over the blocks' own sums ``phi(K_J)^T [V_J, 1]``.
- Packed documents: prefix sums restart at document starts. A block's state holds the keys
  before it in the document of its first position, so a block's sum counts only its keys in
  the document of the next block's first position, and the cumulative sum subtracts what came
  before the last restart (in float64: no cancellation from earlier documents). A query in a
  document that starts within its block reads no state. Not causal, each query sees its whole
  document: a second state, of the keys after the block, by the same sums in reverse order.
- Decoding (``M < N``, the queries the last M positions): the keys before the first query are
  one initial state (those of its document); the blocks run over the last M keys.
- Grouped-query attention: the ``G`` query heads of a key/value head are stacked as ``G * c`` rows
  of each block (``attention_impls.grouped``) against one copy of its keys and states.
Padded slots (M not a multiple of c) are zero keys after ``phi`` and query rows dropped before
the division. float16 and bfloat16 inputs are computed in float32: the sums over N keys
overflow float16 (``phi(q)^T z`` grows as N D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attention_impls.footprint import kv_bytes, rows_bytes
from attention_impls.full import causal_mask
from attention_impls.grouped import fold_groups, fold_mask, unfold_groups
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.params import param
from harness.measure.reference import reference_mask
from harness.measure.registry import register
from harness.store.facts import Promise


@dataclass(frozen=True)
class LinearAttentionParams:
    query_chunk: int = param(
        64, "--query-chunk", "queries per block of the chunked prefix sums c", low=1
    )
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)


def phi(x: torch.Tensor) -> torch.Tensor:
    """The paper's feature map ``elu(x) + 1`` (eq. 7): positive, so every normaliser is."""
    return F.elu(x) + 1


def accumulator(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def scan_layout(doc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For blocks of slots ``doc`` ``[nb, c]`` (document ids, -1 for padding), in scan order:
    ``keep [nb, c]``, the keys of block J that belong to the document of block J + 1's first
    slot (those its state carries on), and ``restart [nb]``, for each block I, 1 + the last
    block L < I whose first slot's document does not reach block L + 1 (0: none), i.e. where
    I's state starts: ``S_I = C_I - C_{restart - 1}``, ``C`` the exclusive cumulative sum."""
    nb = doc.shape[0]
    first = doc[:, 0]  # [nb]
    after = torch.cat([first[1:], first.new_full((1,), -2)])  # [nb] next block's first slot
    keep = doc == after[:, None]  # [nb, c]
    cut = torch.where(first != after, torch.arange(nb, device=doc.device), -1)  # [nb]
    restart = torch.cat([cut.new_zeros(1), cut[:-1].cummax(0).values + 1])  # [nb]
    return keep, restart


def carried(
    u: torch.Tensor, restart: torch.Tensor | None, init: torch.Tensor | None
) -> torch.Tensor:
    """The state before each block ``[.., nb, D, D+1]`` from the blocks' sums ``u`` (same
    shape): ``init`` plus the sums of the blocks before, since the last restart."""
    steps = [u.new_zeros(u[:, :, :1].shape) if init is None else init[:, :, None], u[:, :, :-1]]
    steps = torch.cat(steps, dim=2)  # [.., nb, D, D+1]: init, u_0 .. u_{nb-2}
    if restart is None:
        return steps.cumsum(dim=2)
    total = steps.double().cumsum(dim=2)
    before = torch.cat([torch.zeros_like(total[:, :, :1]), total], dim=2)[:, :, restart]
    return (total - before).to(u.dtype)


def block_layout(inputs: Inputs, chunk: int, causal: bool, device: torch.device) -> dict:
    """What ``prepare`` precomputes for the chunked path: blocks of query rows, their masks and
    scan tables (forward, and backward when not causal with documents), the initial state's
    key range."""
    m, off, n = inputs.query_len, inputs.query_offset, inputs.seq_len
    c = min(chunk, m)
    nb = math.ceil(m / c)
    pos = (off + torch.arange(nb * c, device=device)).view(nb, c)  # [nb, c] position of a slot
    real = pos < n
    doc = inputs.document_ids(device)  # [N]
    slot_doc = torch.where(real, doc[pos.clamp(max=n - 1)], -1)  # [nb, c]
    within = real[:, None, :] & (slot_doc[:, :, None] == slot_doc[:, None, :])  # [nb, c, c]
    within |= ~real[:, :, None]  # padded query rows: no document (dropped anyway)
    if causal:
        within &= pos[:, None, :] <= pos[:, :, None]
    layout = {"c": c, "nb": nb, "within": within, "start": int((doc[:off] != doc[off]).sum())}
    keep, restart = scan_layout(slot_doc)
    docs = inputs.documents > 1
    # [nb, c]: the query rows in the document of the first slot, whose keys the state holds
    reads = slot_doc == slot_doc[:, :1] if docs else None
    layout["fwd"] = (keep if docs else None, restart if bool(restart.any()) else None, reads)
    if not causal and docs:  # the keys after each block: the same scan in reverse order
        keep, restart = scan_layout(slot_doc.flip(0, 1))
        reads = slot_doc == slot_doc[:, -1:]  # the last slot's document
        layout["bwd"] = (keep.flip(0, 1), restart if bool(restart.any()) else None, reads)
    return layout


@register
class LinearAttention(AttentionBackend):
    name = "linear-attention"
    family = "linear_attention"
    description = "elu+1 feature maps, phi(q)^T sum phi(k) v^T; causal by chunked prefix sums"
    Params = LinearAttentionParams
    promise = Promise(1)
    supports_gqa = supports_decoding = supports_documents = True

    def param_errors(self, seq_len: int) -> list[str]:
        c = self.params.query_chunk
        return [f"query_chunk {c} must be at least 1"] if c < 1 else []

    def mask(self, inputs, q, k, rows=None):
        """The pairs whose ``phi(q)^T phi(k)`` weights count: all, or ``j <= i`` when causal."""
        if self.params.causal:
            return causal_mask(inputs, rows, q.device)
        return super().mask(inputs, q, k, rows)

    def prepare(self, inputs: Inputs) -> AttentionFn:
        hkv, groups = inputs.kv_heads_count, inputs.heads // inputs.kv_heads_count
        m, off, acc = inputs.query_len, inputs.query_offset, accumulator(inputs.dtype)
        if not self.params.causal and inputs.documents == 1:

            def whole(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                b, h, _, d = q.shape
                v1 = F.pad(v.to(acc), (0, 1), value=1.0)  # [B, Hkv, N, D+1]
                s = phi(k.to(acc)).transpose(-1, -2) @ v1  # [B, Hkv, D, D+1]: S and z
                y = phi(q.to(acc)).reshape(b, hkv, -1, d) @ s  # [B, Hkv, G*M, D+1]
                y = y.view(b, h, m, d + 1)
                return (y[..., :d] / y[..., d:]).to(q.dtype)  # [B, H, M, D]

            return whole

        lay = block_layout(inputs, self.params.query_chunk, self.params.causal, inputs.device)
        c, nb, start = lay["c"], lay["nb"], lay["start"]
        within = fold_mask(lay["within"], groups).to(acc)  # [nb, G*c, c]
        scans = [lay["fwd"]] + ([lay["bwd"]] if "bwd" in lay else [])
        # the query rows that read each scan's state, folded as the rows: [nb, G*c, 1]
        scans = [
            (keep, restart, None if reads is None else fold_mask(reads[..., None], groups).to(acc))
            for keep, restart, reads in scans
        ]

        def block_sums(pk: torch.Tensor, v1: torch.Tensor, keep: torch.Tensor | None):
            if keep is not None:
                v1 = v1 * keep[..., None].to(v1.dtype)
            return pk.transpose(-1, -2) @ v1  # [B, Hkv, nb, D, D+1]

        def blocks(x: torch.Tensor) -> torch.Tensor:
            """``[.., M, X]`` -> ``[.., nb, c, X]``, zero rows padded."""
            return (F.pad(x, (0, 0, 0, nb * c - m)) if nb * c > m else x).unflatten(2, (nb, c))

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            b, h, _, d = q.shape
            v1 = F.pad(v.to(acc), (0, 1), value=1.0)  # [B, Hkv, N, D+1]
            pk = phi(k.to(acc))  # [B, Hkv, N, D]
            init = None
            if off > start:  # decoding: the keys before the first query, in its document
                init = pk[:, :, start:off].transpose(-1, -2) @ v1[:, :, start:off]
            # blocks of the last M positions, padded slots zero keys: [B, Hkv, nb, c, D(+1)]
            pk, v1 = (blocks(t[:, :, off:]) for t in (pk, v1))
            pq = fold_groups(blocks(phi(q.to(acc))), hkv)  # [B, Hkv, nb, G*c, D]
            # within the block: masked phi(q)^T phi(k), times [V, 1]; in place is safe, the
            # matmul's backward needs its inputs, not its output
            y = (pq @ pk.transpose(-1, -2)).mul_(within) @ v1  # [B, Hkv, nb, G*c, D+1]
            # across blocks: the state of the keys before the block (and, not causal with
            # documents, of those after it: the same scan over the blocks in reverse order)
            for scan, (keep, restart, reads) in enumerate(scans):
                u = block_sums(pk, v1, keep)  # [B, Hkv, nb, D, D+1]
                if scan == 0:
                    s = carried(u, restart, init)
                else:
                    s = carried(u.flip(2), restart, None).flip(2)
                y = y.add_((pq if reads is None else pq * reads) @ s)  # [B, Hkv, nb, G*c, D+1]
            y = unfold_groups(y, groups).reshape(b, h, nb * c, d + 1)[:, :, :m]  # [B, H, M, D+1]
            return (y[..., :d] / y[..., d:]).to(q.dtype)  # [B, H, M, D]

        return fn

    def reference(
        self,
        inputs: Inputs,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        compute_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Dense: ``A = phi(Q) phi(K)^T`` ``[B, H, rows, N]`` restricted to the case's pairs
        (``reference_mask``: causal at the queries' positions, within documents), rows
        normalised, times V; in ``compute_dtype`` (float64 on CPU by default); differentiable."""
        if compute_dtype is None:
            compute_dtype = torch.float64 if q.device.type == "cpu" else torch.float32
        mask = reference_mask(self, inputs, q.detach(), k.detach(), rows)
        q, k, v = (t.to(compute_dtype) for t in (q[:, :, rows.to(q.device)], k, v))
        groups = q.shape[1] // k.shape[1]
        k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))  # [B, H, N, D]
        weights = (phi(q) @ phi(k).transpose(-1, -2)) * mask  # [B, H, rows, N]
        return (weights @ v) / weights.sum(dim=-1, keepdim=True)  # [B, H, rows, D]

    def forward_flops(self, inputs: Inputs) -> float:
        """The matmuls of the formula in its RNN form (section 3.4), the same causal or not,
        2 FLOPs per multiply-add: each key adds ``phi(k) [v, 1]^T`` to the state, ``2 D (D + 1)``
        per key per batch element and key/value head (the state is shared by its query heads),
        and each query reads it, ``phi(q)^T [S, z]``, ``2 D (D + 1)`` per query per batch
        element and query head. The chunked kernel's within-block products (``4 c D`` per query
        row) and the feature map, division and padding are overhead, not counted."""
        b, h, m, d = inputs.shape
        n = inputs.seq_len
        return float(2 * d * (d + 1) * b * (inputs.kv_heads_count * n + h * m))

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Counted from ``fn``'s tensors, in the accumulator dtype (float32 for half inputs).

        Not causal, one document: ``phi(k)``, ``[V, 1]``, ``phi(q)``, ``y`` ``[.., D+1]`` and the
        output. Chunked: besides those (padded), the block scores ``[B, H, nb, c, c]`` and their
        masked copy, the states and their cumulative sum ``[B, Hkv, nb, D, D+1]`` (float64
        with documents; twice with the backward scan). A backward pass keeps them all and adds
        their gradients, dq, dk, dv."""
        acc = accumulator(inputs.dtype)
        ratio = torch.empty((), dtype=acc).element_size() / inputs.element_size
        d, m, n = inputs.head_dim, inputs.query_len, inputs.seq_len

        def size(x: int) -> int:
            return int(x * ratio)

        keys = size(kv_bytes(inputs) * (2 * d + 1) // d)  # phi(k) and [V, 1]
        queries = size(rows_bytes(inputs, m, 2 * d + 1))  # phi(q) and y
        fixed = keys + queries + rows_bytes(inputs, m)
        if not self.params.causal and inputs.documents == 1:
            return 2 * fixed if inputs.requires_grad else fixed
        c = min(self.params.query_chunk, m)
        nb = math.ceil(m / c)
        scores = size(rows_bytes(inputs, nb * c, c))
        states = size(kv_bytes(inputs) * nb * (d + 1) // n)  # [B, Hkv, nb, D, D+1]
        if inputs.documents > 1:
            states *= 3 if acc != torch.float64 else 2
        scans = 2 if not self.params.causal and inputs.documents > 1 else 1
        chunked = 2 * fixed + 2 * scores + 2 * scans * states
        return 2 * chunked if inputs.requires_grad else chunked
