"""A table as plain text that fits a terminal's width: every cell kept, wrapped where needed.

Markdown tables (``DataFrame.to_markdown``) keep each row on one line, so a row with a long cell
is as wide as that cell. Here the columns that may wrap (``wrap``: long texts) share what the
others leave of the width, split so that the fewest words are broken, then so that the table
takes the fewest lines; their cells wrap onto further lines, at spaces where there are any.
Nothing is cut. Where even that does not fit, the widest columns of all are narrowed to fit.
"""

from __future__ import annotations

import functools
import itertools
import textwrap
from collections.abc import Collection

import pandas as pd

GAP = "  "  # between columns
MIN_WRAP = 12  # the narrowest a wrapping column is made before the others are narrowed too


def wrapped_lines(text: str, width: int) -> tuple[int, int]:
    """(lines, words broken) of ``text`` wrapped at ``width`` as ``_wrap`` does (greedily, at
    spaces; a word longer than the width broken across lines)."""
    lines, used, broken = 0, width, 0
    for word in text.split():
        if used + 1 + len(word) <= width:
            used += 1 + len(word)
        elif len(word) <= width:
            lines, used = lines + 1, len(word)
        else:
            broken += 1
            lines, used = lines + -(-len(word) // width), len(word) % width or width
    return max(lines, 1), broken


def _evenly(natural: list[int], budget: int) -> list[int]:
    """The widest columns cut to one common width, the largest that fits."""
    if budget < len(natural):
        raise ValueError(f"{len(natural)} columns cannot fit in {budget} characters")
    cap = max(natural)
    while sum(min(w, cap) for w in natural) > budget:
        cap -= 1
    return [min(w, cap) for w in natural]


def column_widths(cells: list[list[str]], budget: int, wrap: Collection[int] = ()) -> list[int]:
    """Each column's width for these ``cells`` (rows, the header one of them): its widest cell
    where all fit in ``budget``; else the columns in ``wrap`` narrowed, no further than
    ``MIN_WRAP``, to the split that breaks the fewest words across lines, then takes the fewest
    lines, then wraps the fewest cells; else ``_evenly``."""
    natural = [max(1, *(len(row[i]) for row in cells)) for i in range(len(cells[0]))]
    if sum(natural) <= budget:
        return natural
    wrap = [i for i in wrap if natural[i] > MIN_WRAP]
    room = budget - sum(w for i, w in enumerate(natural) if i not in wrap)
    if not wrap or room < MIN_WRAP * len(wrap):
        return _evenly(natural, budget)
    texts = [[row[i] for i in wrap] for row in cells]
    lines = functools.cache(wrapped_lines)

    def score(widths: tuple[int, ...]) -> tuple[int, int, int]:
        broken, total, wrapped = 0, 0, 0
        for row in texts:
            counts = [lines(t, w) for t, w in zip(row, widths, strict=True)]
            broken += sum(b for _, b in counts)
            total += max(n for n, _ in counts)
            wrapped += sum(n > 1 for n, _ in counts)
        return broken, total, wrapped

    # every split of the room among the wrapping columns (the last one takes what is left): meant
    # for one or two of them
    *first, last = wrap
    splits = [(*some, min(room - sum(some), natural[last]))
              for some in itertools.product(*(range(MIN_WRAP, natural[i] + 1) for i in first))
              if room - sum(some) >= MIN_WRAP]  # fmt: skip
    if not splits:
        return _evenly(natural, budget)
    best = min(splits, key=score)
    widths = list(natural)
    for i, w in zip(wrap, best, strict=True):
        widths[i] = w
    return widths


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def fit(
    table: pd.DataFrame,
    width: int,
    right: Collection[str] = (),
    wrap: Collection[str] = (),
    below: str | None = None,
) -> str:
    """``table`` (cells as text) as lines of at most ``width`` characters: a header, a rule, then
    each row on as many lines as its longest wrapped cell needs. Columns named in ``wrap`` are
    the ones narrowed first; those in ``right`` are aligned right (numbers). The column
    ``below``, where given, is no column: its cell, after its name and a colon, is wrapped under
    its row, from the second column to the full width (for long texts: notes, reasons)."""
    notes = [str(v) for v in table[below]] if below is not None else None
    if below is not None:
        table = table.drop(columns=[below])
    headers = [str(c) for c in table.columns]
    rows = [[str(v) for v in row] for row in table.itertuples(index=False, name=None)]
    budget = width - len(GAP) * (len(headers) - 1)
    wrapping = [i for i, h in enumerate(headers) if h in wrap]
    widths = column_widths([headers, *rows], budget, wrapping)
    align = [str.rjust if h in right else str.ljust for h in headers]
    indent = " " * (widths[0] + len(GAP)) if len(widths) > 1 and widths[0] < width // 2 else ""
    lines = []
    for r, cells in enumerate([headers, ["-" * w for w in widths], *rows]):
        wrapped = [_wrap(c, w) for c, w in zip(cells, widths, strict=True)]
        for i in range(max(len(w) for w in wrapped)):
            parts = [a(w[i] if i < len(w) else "", n)
                     for w, n, a in zip(wrapped, widths, align, strict=True)]  # fmt: skip
            lines.append(GAP.join(parts).rstrip())
        if notes is not None and r >= 2 and notes[r - 2]:
            note = f"{below}: {notes[r - 2]}"
            lines += [indent + line for line in _wrap(note, width - len(indent))]
    return "\n".join(lines)
