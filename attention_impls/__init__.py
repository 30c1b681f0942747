"""Attention backends, one module per family; importing a module registers its backends.

The order here is the order of listings and default sweeps.
"""

# ruff: noqa: F401, I001
from attention_impls import full
from attention_impls import longformer
from attention_impls import bigbird
from attention_impls import reformer
