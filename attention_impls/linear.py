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
  the document of the next block's first position, and the cumulative sum starts afresh at
  each block whose first position's document began in the block before (one ``cumsum`` per
  run of blocks: nothing of earlier documents is subtracted, so no cancellation). A query in
  a document that starts within its block reads no state. Not causal, each query sees its whole
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

from attention_impls.footprint import rows_bytes
from attention_impls.full import causal_mask
from attention_impls.grouped import fold_groups, fold_mask, unfold_groups
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs, expand_heads
from harness.measure.params import param
from harness.measure.reference import reference_dtype, reference_mask
from harness.measure.registry import register
from harness.store.facts import Promise


@dataclass(frozen=True)
class LinearAttentionParams:
    query_chunk: int = param(
        64, "--query-chunk", "queries per block of the chunked prefix sums c", low=1, kernel=True
    )
    causal: bool = param(False, "--causal", "keys j <= i only", for_all=True)


def phi(x: torch.Tensor) -> torch.Tensor:
    """The paper's feature map ``elu(x) + 1`` (eq. 7): positive, so every normaliser is."""
    return F.elu(x) + 1


def feature_attention(
    fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Kernelised attention densely, the reference of every feature-map family (this one's elu+1,
    Performer's random features): ``A = phi(Q) phi(K)^T`` ``[B, H, rows, N]`` restricted to
    ``mask``, each row divided by its sum, times ``v [B, H, N, D]``."""
    weights = (fq @ fk.transpose(-1, -2)) * mask  # [B, H, rows, N]
    return (weights @ v) / weights.sum(dim=-1, keepdim=True)  # [B, H, rows, D]


def accumulator(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def scan_layout(doc: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """For blocks of slots ``doc`` ``[nb, c]`` (document ids, -1 for padding), in scan order:
    ``keep [nb, c]``, the keys of block J in the document of block J + 1's first slot (those
    its state carries on), and the blocks where a state starts afresh (``carried``): 0 and
    each block I whose previous block's first slot is in another document than I's."""
    first = doc[:, 0]  # [nb]
    after = torch.cat([first[1:], first.new_full((1,), -2)])  # [nb] next block's first slot
    keep = doc == after[:, None]  # [nb, c]
    starts = (first[1:] != first[:-1]).nonzero().flatten() + 1
    return keep, [0, *starts.tolist()]


def carried(u: torch.Tensor, starts: list[int], init: torch.Tensor | None) -> torch.Tensor:
    """The state before each block ``[.., nb, D, D+1]`` from the blocks' sums ``u`` (same
    shape): ``init`` plus the sums of the blocks before, the sum restarting at ``starts``.

    With ``steps = init, u_0 .. u_{nb-2}``, the state of block I is the sum of ``steps`` from
    the last start ``<= I`` to I: block I - 1 holds the keys of I's first slot's document from
    where it starts on (``keep``), and the blocks before it none. Cumulative sums run from
    start to start, so no sum of earlier documents is ever subtracted (no cancellation)."""
    steps = [u.new_zeros(u[:, :, :1].shape) if init is None else init[:, :, None], u[:, :, :-1]]
    steps = torch.cat(steps, dim=2)  # [.., nb, D, D+1]: init, u_0 .. u_{nb-2}
    if len(starts) == 1:
        return steps.cumsum(dim=2)
    return torch.cat([s.cumsum(dim=2) for s in steps.tensor_split(starts[1:], dim=2)], dim=2)


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
    keep, starts = scan_layout(slot_doc)
    docs = inputs.documents > 1
    # [nb, c]: the query rows in the document of the first slot, whose keys the state holds
    reads = slot_doc == slot_doc[:, :1] if docs else None
    layout["fwd"] = (keep if docs else None, starts, reads)
    if not causal and docs:  # the keys after each block: the same scan in reverse order
        keep, starts = scan_layout(slot_doc.flip(0, 1))
        reads = slot_doc == slot_doc[:, -1:]  # the last slot's document
        layout["bwd"] = (keep.flip(0, 1), starts, reads)
    return layout


@register
class LinearAttention(AttentionBackend):
    name = "linear-attention"
    family = "linear"
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
            (keep, starts, None if reads is None else fold_mask(reads[..., None], groups).to(acc))
            for keep, starts, reads in scans
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
            for scan, (keep, starts, reads) in enumerate(scans):
                u = block_sums(pk, v1, keep)  # [B, Hkv, nb, D, D+1]
                if scan == 0:
                    s = carried(u, starts, init)
                else:
                    s = carried(u.flip(2), starts, None).flip(2)
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
        compute_dtype = reference_dtype(q.device, compute_dtype)
        mask = reference_mask(self, inputs, q.detach(), k.detach(), rows)
        q, k, v = (t.to(compute_dtype) for t in (q[:, :, rows.to(q.device)], k, v))
        k, v = (expand_heads(t, q.shape[1]) for t in (k, v))  # [B, H, N, D]
        return feature_attention(phi(q), phi(k), v, mask)  # [B, H, rows, D]

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
        """Counted from the tensors ``fn`` holds at its largest moment, in the accumulator dtype
        (float32, with copies of q, k, v, for half inputs); ``[V, 1]`` and ``y`` have D + 1
        columns.

        Not causal, one document: ``[V, 1]`` and ``phi(k)`` (``elu``'s result beside it), then
        ``phi(q)``, ``y`` and the output. Chunked: the same three first; then ``[V, 1]`` and
        ``phi(k)`` (their blocks of the last M positions), ``phi(q)`` in blocks and the largest
        of: the block scores
        ``[B, H, nb, c, c]`` with ``y``; ``y`` with the states ``[B, Hkv, nb, D, D+1]`` in the
        scan (the blocks' sums, the shifted sums, their cumulative sums; with documents the
        runs' sums joined, and in the reverse scan the forward one's state); ``y`` with two
        states and the state's product (with documents, the rows that read it); the two
        states, ``y`` unfolded (grouped query heads) and the output.

        A backward pass keeps ``[V, 1]``, ``phi(k)`` (full and in blocks), ``phi(q)``, the
        masked scores, each scan's state, ``y`` and the output, and adds the gradients of ``y``
        (two), ``phi(q)`` and the scores; or, on the key side, keeps ``[V, 1]`` and ``phi(k)``
        beside their gradients (and, chunked, the blocks' gradients padded back to N), dq and
        the output."""
        acc = accumulator(inputs.dtype)
        ratio = torch.empty((), dtype=acc).element_size() / inputs.element_size
        b, h, m, d = inputs.shape
        n, hkv = inputs.seq_len, inputs.kv_heads_count

        def size(heads: int, rows: int, width: int) -> int:
            return int(b * heads * rows * width * inputs.element_size * ratio)

        out = rows_bytes(inputs, m)
        casts = size(h, m, d) + size(hkv, 2 * n, d) if acc != inputs.dtype else 0
        keys = size(hkv, n, 2 * d + 1)  # [V, 1] and phi(k)
        if not self.params.causal and inputs.documents == 1:
            qv, qv1 = size(h, m, d), size(h, m, d + 1)
            if not inputs.requires_grad:
                return casts + size(hkv, n, d + 1) + max(size(hkv, 2 * n, d), 2 * qv, qv1 + out)
            return casts + max(keys + 4 * qv + 2 * qv1 + out, 2 * keys + qv + out)
        c = min(self.params.query_chunk, m)
        nb = math.ceil(m / c)
        blocked = size(hkv, nb * c, 2 * d + 1)  # [V, 1] and phi(k) of the last M, in blocks
        qv, qv1 = size(h, nb * c, d), size(h, nb * c, d + 1)
        scores, state = size(h, nb * c, c), size(hkv, nb * d, d + 1)
        docs, reverse = inputs.documents > 1, not self.params.causal and inputs.documents > 1
        scan = (4 + reverse if docs else 3) * state
        read = 2 * state + 2 * qv1 + (qv if docs else 0)
        end = 2 * state + qv1 + max(out, qv1 if inputs.grouped else 0)
        if not inputs.requires_grad:
            during = max(scores + qv1, scan + qv1, read, end)
            return casts + max(keys + size(hkv, n, d), max(keys, blocked) + qv + during)
        saved = keys + (blocked if nb * c != n else 0) + qv + qv1 + scores + state * (1 + reverse)
        extra = size(hkv, nb * c, d + 1) + qv + state if docs else 0
        return casts + max(saved + 2 * qv1 + qv + scores + out + extra, 3 * keys + qv + out)
