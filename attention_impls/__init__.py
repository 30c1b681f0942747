"""Attention backends, one module per family; importing a module registers its backends.

Each family's module holds its plain PyTorch implementation, which defines the pattern, and the
family's thin kernels: backends that compute the same pattern with a library's fused kernel and
hold the plain backend for it (``harness.measure.backend.Kernel``; ``full``, ``longformer``,
``bigbird``, ``strided``). The libraries' machinery lives in modules of its own (``flex``,
``xformers_ops``), as do kernels with much code of their own (``sdpa_kernels``,
``flex_reformer``).

The order here is the order of listings and default sweeps.
"""

# ruff: noqa: F401, I001
from attention_impls import full
from attention_impls import sdpa_kernels
from attention_impls import longformer
from attention_impls import bigbird
from attention_impls import reformer
from attention_impls import flex_reformer
from attention_impls import strided
from attention_impls import local
from attention_impls import linformer
from attention_impls import linear
from attention_impls import performer
from attention_impls import nystromformer
from attention_impls import peers
