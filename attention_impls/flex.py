"""FlexAttention versions of the Longformer, BigBird and Reformer patterns.

FlexAttention (``torch.nn.attention.flex_attention``; Dong et al., 2024, "Flex Attention: A
Programming Model for Generating Optimized Attention Kernels", arXiv:2412.05496) takes a pattern
as ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (scores as ``score_mod``) plus a ``BlockMask`` of the
tiles holding any attended pair; ``torch.compile`` makes one fused kernel of it (Triton on CUDA,
C++ on CPU) that skips empty tiles, runs mask_mod on partial ones only, and never materialises
the scores. Layout ``[B, H, N, D]`` as in ``harness.measure.backend``.

Each backend subclasses the plain one (same ``Params``, ``mask``, parameter checks) and computes
the same pattern. ``prepare`` builds the mask_mod over small index tables (O(N); O(N / b * r)
for BigBird's random blocks) and the BlockMask, once per shape; tiles are BigBird's blocks or
Reformer's chunks where the kernel accepts that size (all-or-nothing tiles then need no
mask_mod), else 128. The closure calls one module-level ``torch.compile(flex_attention,
dynamic=False)``, compiled at its first call: in torch 2.13 the dynamic-shape CPU kernel fails to
build (``'cur_kvSplitSize4' was not declared``) at the second length, where the default
``dynamic=None`` switches to it. Scalars the mods read are 0-dim tensors, so only a new shape
(or dtype, or BigBird's r, Reformer's n_hashes) recompiles.

Reformer's hashing and sorting depend on the values: they stay in the closure (the plain
module's helpers). In sorted coordinates the pattern is static. The rounds are folded into the
head dimension (``[B, H * R, Np, D]``, one call), pairs met in several rounds count once through
a ``score_mod`` subtracting log(count), and the rounds are merged by the softmax of their
log-sum-exps. Compiled FlexAttention on CPU has neither backward nor log-sum-exp in torch 2.13:
on CPU these backends run forward only, and flex-reformer one round only.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from attention_impls.bigbird import BigBird, random_block_table
from attention_impls.footprint import rows_bytes
from attention_impls.longformer import Longformer, global_positions
from attention_impls.longformer import allowed as longformer_allowed
from attention_impls.reformer import Reformer, rotations, unit_keys
from harness.measure.backend import AttentionBackend, AttentionFn
from harness.measure.inputs import Inputs
from harness.measure.registry import register

try:
    from torch.nn.attention.flex_attention import (
        AuxRequest,
        BlockMask,
        create_block_mask,
        flex_attention,
    )

    FLEX_IMPORT_ERROR: str | None = None
except ImportError as error:  # older torch: a reason, never an import error
    FLEX_IMPORT_ERROR = f"torch.nn.attention.flex_attention cannot be imported ({error})"

TILE = 128  # flex's default BlockMask tile
EAGER_MASK_MAX_LEN = 16384  # longer: create_block_mask compiled (seconds once, then fast)
MASK_SLAB_ELEMENTS = 1 << 22  # eager create_block_mask evaluates mask_mod on slabs this large
_COMPILED: dict[str, Callable[..., Any]] = {}
Mod = Callable[..., torch.Tensor]


def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled once per process (compilation happens at its first call, per shape)."""
    if fn.__name__ not in _COMPILED:
        _COMPILED[fn.__name__] = torch.compile(fn, dynamic=False, fullgraph=True)
    return _COMPILED[fn.__name__]


def _flex() -> Callable[..., Any]:
    return _compiled(flex_attention)


def _scalar(value: int, device: torch.device) -> torch.Tensor:
    # A tensor, not a Python int: dynamo would specialise on the int and recompile per value.
    return torch.tensor(value, device=device)


def tile_for(size: int, device: torch.device | str) -> int:
    """``size`` as the BlockMask tile where the kernel takes it (CPU: multiples of 64; CUDA: the
    sparse tile must be a multiple of the kernel's BLOCK_M, up to 128), else 128."""
    return size if size % (64 if torch.device(device).type == "cpu" else TILE) == 0 else TILE


def table_len(n: int, tile: int) -> int:
    """Length of per-position tables: the kernel evaluates mask_mod on whole tiles past ``n``."""
    step = math.lcm(tile, TILE)
    return -(-n // step) * step


def build_block_mask(mod: Mod, n: int, device: torch.device | str, tile: int = TILE) -> BlockMask:
    """``create_block_mask(mod, None, None, n, n, BLOCK_SIZE=tile)`` without an [n, n] tensor.

    create_block_mask runs mod on every pair: eagerly at once, that takes int64 temporaries of
    8 n^2 bytes (2 GiB at 16K tokens). Up to EAGER_MASK_MAX_LEN it runs eagerly on slabs of
    query rows (2 CPU cores: 0.3 s at 4K, 1.1-1.4 s at 8K, 2-5 s at 16K); beyond, compiled
    (fused, no [n, n] tensor; 3-7 s to compile per shape there, then 0.4-0.7 s at 16K).
    """
    if n > EAGER_MASK_MAX_LEN:
        return _compiled(create_block_mask)(mod, None, None, n, n, device, BLOCK_SIZE=tile)
    rows = max(tile, MASK_SLAB_ELEMENTS // n // tile * tile)
    if rows >= n:
        return create_block_mask(mod, None, None, n, n, device=device, BLOCK_SIZE=tile)

    def shifted(start: int) -> Mod:
        return lambda b, h, i, j: mod(b, h, i + start, j)

    parts = [
        create_block_mask(shifted(s), None, None, min(rows, n - s), n, device, BLOCK_SIZE=tile)
        for s in range(0, n, rows)
    ]
    names = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices")
    # [1, 1, n / tile(, n / tile)] each, stacked along the query tiles
    blocks = [torch.cat([getattr(p, name) for p in parts], dim=2) for name in names]
    return BlockMask.from_kv_blocks(*blocks, tile, mod, seq_lengths=(n, n))


def flex_reasons(inputs: Inputs) -> list[str]:
    """Why compiled FlexAttention cannot run ``inputs`` here."""
    if FLEX_IMPORT_ERROR:
        return [FLEX_IMPORT_ERROR]
    device, reasons = torch.device(inputs.device).type, []
    if device == "cpu":
        if inputs.requires_grad:
            reasons.append(
                f"compiled FlexAttention on CPU supports inference only in torch "
                f"{torch.__version__} (no backward)"
            )
        if not shutil.which(os.environ.get("CXX", "g++")):
            reasons.append("no C++ compiler (CXX or g++): torch.compile cannot build the kernel")
    elif device == "cuda" and importlib.util.find_spec("triton") is None:
        reasons.append("triton is not installed: torch.compile cannot build the CUDA kernel")
    return reasons


class _Flex:
    """Mixed in before the plain backend: declarations, reasons and the static-pattern prepare."""

    # float64: "`torch.float` , `torch.float16` and `torch.bfloat16` are supported in
    # FlexAttention for CPU device"; not offered on CUDA either.
    dtypes = frozenset({torch.float32, torch.float16, torch.bfloat16})
    preload = ("torch._dynamo", "torch._inductor.compile_fx")  # 1.5-3 s of imports, once

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        return super().not_supported_reasons(inputs) + flex_reasons(inputs)  # type: ignore[misc]

    def mask_mod(self, inputs: Inputs) -> Mod:
        raise NotImplementedError

    def tile(self, inputs: Inputs) -> int:
        return TILE

    def prepare(self, inputs: Inputs) -> AttentionFn:
        mod, tile = self.mask_mod(inputs), self.tile(inputs)
        block_mask = build_block_mask(mod, inputs.seq_len, inputs.device, tile)
        flex, scale = _flex(), inputs.scale

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return flex(q, k, v, block_mask=block_mask, scale=scale)  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """The fused kernel holds no scores: the output and the float32 log-sum-exp and row
        maxima ``[B, H, N]``; with a backward pass (CUDA only, unmeasured) also dq, dk, dv and
        the gradient's row sums, counted as a fifth ``[B, H, N, D]``. Measured on CPU (forward):
        the compiled kernel also allocates two more output-sized buffers (the allocator's trace
        shows them) that never become resident, so the CPU peak does not include them."""
        b, h, n, _ = inputs.shape
        vectors = rows_bytes(inputs, n) * (5 if inputs.requires_grad else 1)
        return vectors + 2 * b * h * n * 4


class FlexMaskBackend(AttentionBackend):
    """A family's fixed pattern as a compiled FlexAttention ``mask_mod``, by composition: the
    subclass names the family's plain backend (``pattern``), whose ``mask_mod``, dense ``mask``,
    parameters, pair count and promise this kernel uses; it adds only how to compute."""

    pattern: ClassVar[type[AttentionBackend]]
    dtypes = _Flex.dtypes
    preload = _Flex.preload

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        p = cls.pattern
        cls.family, cls.Params, cls.promise, cls.is_sparse = (
            p.family,
            p.Params,
            p.promise,
            p.is_sparse,
        )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.plain = self.pattern(self.params)  # the pattern this kernel computes

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        return super().not_supported_reasons(inputs) + flex_reasons(inputs)

    def param_errors(self, seq_len: int) -> list[str]:
        return self.plain.param_errors(seq_len)

    def mask(self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows=None) -> torch.Tensor:
        return self.plain.mask(inputs, q, k, rows)

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float | None:
        return self.plain.attended_pairs(seq_len, seed)

    def prepare(self, inputs: Inputs) -> AttentionFn:
        block_mask = build_block_mask(self.plain.mask_mod(inputs), inputs.seq_len, inputs.device)
        flex, scale = _flex(), inputs.scale

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return flex(q, k, v, block_mask=block_mask, scale=scale)  # [B, H, N, D]

        return fn

    estimate_bytes = _Flex.estimate_bytes


@register
class FlexLongformer(_Flex, Longformer):
    name = "flex-longformer"
    description = "Longformer window, dilation, globals as a compiled FlexAttention mask_mod"

    def mask_mod(self, inputs: Inputs) -> Mod:
        p, n, dev = self.params, inputs.seq_len, torch.device(inputs.device)
        # A dilation >= n leaves only j = i, as does reach = n: clamped, no int32 overflow.
        d = min(p.dilation, n)
        dilation, reach = _scalar(d, dev), _scalar(min(d * p.window, n), dev)
        causal = torch.tensor(p.causal, device=dev)
        is_global = torch.zeros(table_len(n, TILE), dtype=torch.bool, device=dev)
        is_global[global_positions(p.global_tokens, n)] = True

        return lambda b, h, i, j: longformer_allowed(i, j, dilation, reach, is_global, causal)


@register
class FlexBigBird(_Flex, BigBird):
    name = "flex-bigbird"
    description = "BigBird window, global and random blocks as a compiled FlexAttention mask_mod"

    def tile(self, inputs: Inputs) -> int:
        return tile_for(self.params.block_size, inputs.device)

    def mask_mod(self, inputs: Inputs) -> Mod:
        p, n, dev = self.params, inputs.seq_len, torch.device(inputs.device)
        table = random_block_table(n, p, inputs.seed)  # [nq, r], -1 = no block
        # Padded with -1 (no block) to nb rows, at least one column: the shapes, hence the
        # compiled graph, do not depend on g, and r = 0 shares the graph of r = 1.
        rows, r = math.ceil(n / p.block_size), max(table.shape[1], 1)
        table = F.pad(table, (0, r - table.shape[1], 0, rows - table.shape[0]), value=-1)
        # flat: a [row, t] index fails in compiled create_block_mask (fake tensors under vmap)
        table = table.flatten().to(dev)  # [rows * r]
        size, glob, blocks = (_scalar(x, dev) for x in (p.block_size, p.global_blocks, rows))

        def mask_mod(b, h, i, j):
            qb, kb = i // size, j // size
            allowed = ((qb - kb).abs() <= 1) | (qb < glob) | (qb >= blocks - glob)
            allowed = allowed | (kb < glob) | (kb >= blocks - glob)
            row = torch.minimum((qb - glob).clamp(min=0), blocks - 1)  # global rows: any row
            for t in range(r):  # unrolled at trace time
                allowed = allowed | (table[row * r + t] == kb)
            return allowed

        return mask_mod


@register
class FlexReformer(_Flex, Reformer):
    name = "flex-reformer"
    description = "Reformer LSH rounds as compiled FlexAttention over sorted chunks"

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        reasons = super().not_supported_reasons(inputs)
        if torch.device(inputs.device).type == "cpu" and self.params.n_hashes > 1:
            reasons.append(
                f"n_hashes {self.params.n_hashes} > 1 needs the log-sum-exp of each round to "
                f"merge them, and compiled FlexAttention on CPU does not return it in torch "
                f"{torch.__version__} (return_lse unsupported): n_hashes=1 only on CPU"
            )
        return reasons

    def tile(self, inputs: Inputs) -> int:
        return tile_for(self.params.chunk_size, inputs.device)

    def mask_mod(self, inputs: Inputs) -> Mod:
        """The pattern in sorted coordinates (the slots of one round), over the padded length."""
        n, c, dev = inputs.seq_len, self.params.chunk_size, torch.device(inputs.device)
        nc = -(-n // c)
        # Padded tokens sort after every real one: slots >= n are the padded keys.
        real = (n - torch.arange(nc, device=dev) * c).clamp(0, c)  # [nc] real keys per chunk
        window = real + real.roll(1) if nc > 1 else real  # [nc] own and previous chunk
        slots = torch.arange(table_len(nc * c, self.tile(inputs)), device=dev)  # [Np+]
        chunk = (slots // c).clamp(max=nc - 1)  # [Np+]
        # shared-QK drops self unless it is the only real key (the rule of Reformer.mask)
        alone = window[chunk] - (slots < n).long() == 0  # [Np+]
        if not self.params.shared_qk:
            alone.fill_(True)
        size, chunks, length = _scalar(c, dev), _scalar(nc, dev), _scalar(n, dev)

        def mask_mod(b, h, i, j):
            near = (i // size - j // size + chunks) % chunks <= 1  # same or previous, wrapping
            return near & (j < length) & ((i != j) | alone[i])

        return mask_mod

    def prepare(self, inputs: Inputs) -> AttentionFn:
        b, h, n, d = inputs.shape
        c, rounds, shared = self.params.chunk_size, self.params.n_hashes, self.params.shared_qk
        n_pad, dev, tile = -(-n // c) * c, torch.device(inputs.device), self.tile(inputs)
        nc, slots = n_pad // c, table_len(n_pad, tile)
        rot = rotations(inputs, self.params)  # [H, D, R, n_buckets / 2]
        block_mask = build_block_mask(self.mask_mod(inputs), n_pad, dev, tile)
        flex, scale, chunks = _flex(), inputs.scale, _scalar(nc, dev)
        offset_bh = (torch.arange(b * h, device=dev) * n_pad).view(b, h, 1, 1)
        offset_bhr = (torch.arange(b * h * rounds, device=dev) * n_pad).view(b, h, rounds, 1)
        # with one or two chunks every pair meets in every round: a constant count cancels
        counted = rounds > 1 and nc > 2
        # log(count), count 0 (never attended) at 0; float32 at least: log 2 in bf16 is 2e-3 off
        log_dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
        log_count = torch.arange(rounds + 1, device=dev).clamp(min=1).to(log_dtype).log()
        lse_request = {"return_aux": AuxRequest(lse=True)} if rounds > 1 else {}

        def to_sorted(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
            """Rows of ``x`` ``[B, H, N, D]`` in each round's order: ``[B, H * R, Np, D]``."""
            x = F.pad(x, (0, 0, 0, n_pad - n))  # [B, H, Np, D]
            flat = (perm + offset_bh).flatten()  # [B * H * R * Np]
            return x.reshape(-1, d).index_select(0, flat).view(b, h * rounds, n_pad, d)

        def chunk_table(slot: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
            """Chunk in every round r' of the token at each slot of round r: [B, H*R, Np+, R']."""
            chunk = (slot // c).int().transpose(2, 3)  # [B, H, Np, R'] token -> chunk
            src = chunk.unsqueeze(2).expand(b, h, rounds, n_pad, rounds)  # [B, H, R, Np, R']
            idx = perm.unsqueeze(-1).expand(b, h, rounds, n_pad, rounds)  # [B, H, R, Np, R']
            table = src.gather(3, idx).view(b, h * rounds, n_pad, rounds)  # [B, H*R, Np, R']
            return F.pad(table, (0, 0, 0, slots - n_pad))  # [B, H*R, Np+, R']

        def count_mod(perm_q, slot_q, perm_k, slot_k) -> Mod:
            cq = chunk_table(slot_q, perm_q)
            ck = cq if shared else chunk_table(slot_k, perm_k)

            def score_mod(score, bi, hr, i, j):
                # rounds in which both tokens meet: key chunk = query chunk or the one before
                count = ((cq[bi, hr, i, 0] - ck[bi, hr, j, 0] + chunks) % chunks <= 1).int()
                for r in range(1, rounds):  # unrolled at trace time
                    count = count + ((cq[bi, hr, i, r] - ck[bi, hr, j, r] + chunks) % chunks <= 1)
                return score - log_count[count]

            return score_mod

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            perm_q, slot_q, perm_k, slot_k = self._sort_qk(inputs, q, k, rot)  # [B, H, R, Np]
            qs = to_sorted(q, perm_q)  # [B, H * R, Np, D]
            ks = to_sorted(unit_keys(q) if shared else k, perm_k)  # [B, H * R, Np, D]
            vs = to_sorted(v, perm_k)  # [B, H * R, Np, D]
            extra = dict(lse_request)
            if counted:
                with torch.no_grad():
                    extra["score_mod"] = count_mod(perm_q, slot_q, perm_k, slot_k)
            out = flex(qs, ks, vs, block_mask=block_mask, scale=scale, **extra)
            out, aux = out if rounds > 1 else (out, None)
            # back to token order, real query rows only
            idx = (slot_q[..., :n] + offset_bhr).flatten()  # [B * H * R * N]
            out = out.reshape(-1, d).index_select(0, idx).view(b, h, rounds, n, d)
            if aux is None:
                return out[:, :, 0]  # [B, H, N, D]
            lse = aux.lse.reshape(-1).index_select(0, idx)  # [B * H * R * N]
            weights = lse.view(b, h, rounds, n, 1).softmax(dim=2).to(out.dtype)
            return (out * weights).sum(dim=2)  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Forward, measured on CPU (one round): q, the keys and v in each round's sorted order
        ``[B, H * R, Np, D]`` and the output in sorted and in token order (five such), and the
        int64 sort, slot and chunk tables. With a backward pass (CUDA only, unmeasured) the five
        rows twice, for their gradients."""
        b, h, n, _ = inputs.shape
        c, rounds = self.params.chunk_size, self.params.n_hashes
        n_pad = -(-n // c) * c
        copies = 5 * (2 if inputs.requires_grad else 1)
        tables = b * h * rounds * n_pad * 8 * (4 + 2 * rounds)
        return copies * rows_bytes(inputs, rounds * n_pad) + tables
