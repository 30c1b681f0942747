"""The order a sweep runs its lengths in (plain Python: the command line offers the choices
without importing torch)."""

from __future__ import annotations

ORDERS = ("ascending", "coarse-first")


def length_order(lengths: tuple[int, ...], order: str = "ascending") -> list[int]:
    """The lengths in the order the sweep runs them. ``coarse-first``: the shortest, every
    other one and the longest first, then those between, so that a sweep cut short by its time
    budget still spans the whole range (1K 4K 16K 64K, then 2K 8K 32K)."""
    ascending = sorted(lengths)
    if order == "ascending":
        return ascending
    if order != "coarse-first":
        raise ValueError(f"order {order!r}: use {' or '.join(ORDERS)}")
    coarse = ascending[::2] + ([ascending[-1]] if len(ascending) % 2 == 0 else [])
    return coarse + [n for n in ascending if n not in coarse]
