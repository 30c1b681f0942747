"""The input distributions a sweep draws ``q, k, v`` from (``--inputs``; the ``inputs`` column of
results.csv), with the constants of each and the sentence a report prints about it. Here, below
every other layer and without torch, so that the command line lists the names before torch
loads and a report describes them from the stored files; ``harness.measure.inputs`` draws them.

- ``gaussian``: every element of q, k and v i.i.d. standard normal (every run before format 5).
- ``structured``: what is known of real attention inputs, drawn from the seed: queries and keys
  vary smoothly along the sequence (an AR(1) process of correlation length ``CORRELATION_LENGTH``
  tokens, shared by the queries and keys of one key/value head, plus i.i.d. noise), so each
  query attends its neighbours most; a few heavy-hitter key positions (``HEAVY_HITTERS``:
  position 0, the attention sink, and random others) carry a large component along one
  direction shared with every query, so that all queries attend them; values vary smoothly too,
  at the same moderate scale. ``harness.measure.inputs.structured_qkv`` is the generator.
"""

from __future__ import annotations

import math

GAUSSIAN, STRUCTURED = "gaussian", "structured"
NAMES = (GAUSSIAN, STRUCTURED)
DEFAULT = GAUSSIAN  # what runs before format 5 drew, and what a sweep draws unless told

# The structured distribution's constants (a change to any is a new distribution: rename it)
CORRELATION_LENGTH = 32.0  # tokens: rho = exp(-1 / 32), the AR(1)'s lag-one correlation
SMOOTH_SHARE = 0.75  # of each element's variance, in the smooth component; the rest i.i.d. noise
HEAVY_HITTERS = 4  # key positions: 0 and 3 drawn uniformly from 1 .. N - 1 (fewer if N < 4)
HITTER_NORM = 4.0  # a heavy hitter's added component along u: HITTER_NORM * sqrt(D)
QUERY_PULL = 2.0  # every query's component along u: a heavy hitter's score gains 2 * 4 = 8


def rho() -> float:
    """The AR(1)'s correlation between neighbouring positions."""
    return math.exp(-1.0 / CORRELATION_LENGTH)


DESCRIPTIONS = {
    GAUSSIAN: "q, k and v i.i.d. standard normal",
    STRUCTURED: (
        "q, k and v drawn from the seed with the structure of real attention inputs. Per batch "
        "element and key/value head, a smooth sequence s (an AR(1) process along the positions, "
        f"correlation exp(-|i − j| / {CORRELATION_LENGTH:g}) between positions i and j, unit "
        "variance) is shared by the keys and by the queries of that head; each key and query is "
        f"√{SMOOTH_SHARE:g}·s plus √{1 - SMOOTH_SHARE:g}·(i.i.d. standard normal noise), so "
        f"that queries attend their neighbours most (a score gain of about {SMOOTH_SHARE:g}·√D "
        f"next to the query). {HEAVY_HITTERS} heavy-hitter keys (position 0, the attention "
        f"sink, and {HEAVY_HITTERS - 1} random positions) add {HITTER_NORM:g}·√D along a random "
        f"unit direction u, and every query adds {QUERY_PULL:g}·u, so that every query gives "
        f"them a score about {QUERY_PULL * HITTER_NORM:g} higher. Values are √{SMOOTH_SHARE:g}"
        f"·(a second smooth sequence) + √{1 - SMOOTH_SHARE:g}·noise, unit variance. Decoding "
        "queries are the last q_len positions of the same sequence"
    ),
}


def description(name: str) -> str:
    """The sentence a report prints about the distribution ``name`` (the name alone where this
    version does not know it)."""
    return DESCRIPTIONS.get(name, name)
