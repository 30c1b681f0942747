"""Byte counts shared by the backends' ``estimate_bytes``.

An estimate predicts what ``peak_mem_bytes`` measures: the most memory the call holds at once
beyond its inputs, the output and (with a backward pass) the gradients included. Each backend
counts the tensors that are alive together at its largest moment, read from its code and checked
against the allocator's trace of one call (``torch.profiler`` with ``profile_memory``); the
measured ratios are in ``results/memory-estimates-cpu-4k/``.
"""

from __future__ import annotations

import torch

from harness.measure.inputs import Inputs

FLOAT32 = 4  # CPU flash kernels accumulate their tiles in float32 for every input dtype


def rows_bytes(inputs: Inputs, rows: int, width: int | None = None) -> int:
    """Bytes of one ``[B, H, rows, width]`` tensor of the inputs' dtype (``width``: head dim)."""
    width = inputs.head_dim if width is None else width
    return inputs.batch * inputs.heads * rows * width * inputs.element_size


def kv_bytes(inputs: Inputs) -> int:
    """Bytes of one ``[B, Hkv, N, D]`` tensor: k, v, or their gradients."""
    b, hkv, n, d = inputs.kv_shape
    return b * hkv * n * d * inputs.element_size


def mask_bytes(inputs: Inputs, element_size: int = 1) -> int:
    """Bytes of one ``[M, N]`` mask shared by batch and heads (boolean by default)."""
    return inputs.query_len * inputs.seq_len * element_size


def cpu_flash_buffers_bytes(q_len: int, kv_len: int, head_dim: int, backward: bool) -> int:
    """Per-thread scratch of PyTorch's CPU flash kernel, for every thread.

    Query tiles of 256 rows from 768 queries on (64 from 192, else 32), key tiles of 512. The
    forward holds a score tile, its row max and sum and an output tile; the backward a score
    tile and its gradient.
    """
    q_split = min(q_len, 256 if q_len >= 768 else 64 if q_len >= 192 else 32)
    kv_split = min(kv_len, 512)
    if backward:
        elements = 2 * q_split * kv_split
    else:
        elements = q_split * kv_split + 2 * q_split + q_split * head_dim
    return torch.get_num_threads() * elements * FLOAT32


def fused_attention_bytes(
    inputs: Inputs, q_len: int | None = None, kv_len: int | None = None
) -> int:
    """``scaled_dot_product_attention`` through a fused kernel (no score matrix), ``q_len`` queries
    over ``kv_len`` keys (by default the inputs' M and N).

    The output ``[B, H, M, D]``; with a backward pass also dq and dk, dv (``[B, Hkv, N, D]``: with
    grouped-query attention the CPU flash kernel sums the query heads' key gradients in place,
    measured) and, on CPU, the copy of the output's gradient that the flash kernel makes in its
    own ``[B, M, H, D]`` layout. On CPU the kernel's per-thread tiles are added (under 1 MiB a
    thread). On CUDA (flash, memory-efficient, cuDNN) this is unmeasured: their float32
    accumulators and log-sum-exp are not counted.
    """
    q_len = inputs.query_len if q_len is None else q_len
    kv_len = inputs.seq_len if kv_len is None else kv_len
    out = rows_bytes(inputs, q_len)
    keys = kv_bytes(inputs) * kv_len // inputs.seq_len
    cpu = torch.device(inputs.device).type == "cpu"
    buffers = cpu_flash_buffers_bytes(q_len, kv_len, inputs.head_dim, False) if cpu else 0
    if not inputs.requires_grad:
        return out + buffers
    grads = out + 2 * keys  # dq, dk, dv
    if cpu:
        grads += out + cpu_flash_buffers_bytes(q_len, kv_len, inputs.head_dim, True)
    return out + grads
