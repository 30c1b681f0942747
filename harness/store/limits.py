"""The largest values a sweep accepts, shared by the command line (``harness.cli.validation``) and
the checks of stored rows (``harness.store.runvalues``), so that a run folder holds nothing the
sweep itself would have refused."""

from __future__ import annotations

# 2^24 tokens: at that length one head's dense score matrix alone holds 2^48 numbers (1 PiB in
# float32), and q, k and v at batch 1, 4 heads, head_dim 64 take 48 GiB in float32; no device
# measures a longer sequence, and positions stay exact in float32 (24-bit significand)
MAX_LENGTH = 2**24
MAX_LENGTHS = 256  # --lengths values: a sweep of more would take days at any useful length
# CUDA's grid has at most 65535 blocks in y and z, where attention kernels put batch and heads
MAX_BATCH = 65_535
MAX_HEADS = 65_535
# the largest head_dim of any published model is 256; 4096 leaves room and refuses typos
MAX_HEAD_DIM = 4096
# every global token is a dense row and column: a thousand of them is full attention already
MAX_GLOBAL_TOKENS = 1024
MAX_HASHES = 64  # Reformer rounds: the paper measures 1 to 8; each round adds time and memory
MAX_SEED = 2**63 - 1
