"""Attention backends, one module per family; importing a module registers its backends.

The plain PyTorch implementation of each family lives in the family's module (``full``,
``longformer``, ``bigbird``, ``reformer``); the fast kernels for the same patterns are grouped by
the library they use (``sdpa_kernels``, ``xformers_ops``, ``flex``), since that is what their code
shares.

The order here is the order of listings and default sweeps.
"""

# ruff: noqa: F401, I001
from attention_impls import full
from attention_impls import sdpa_kernels
from attention_impls import longformer
from attention_impls import bigbird
from attention_impls import reformer
from attention_impls import xformers_ops
from attention_impls import flex
from attention_impls import strided
