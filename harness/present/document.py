"""A report as a list of blocks, rendered twice: Markdown with the PNGs beside it, and one
self-contained HTML file with the PNGs embedded. Both show the same text, tables and figures.

Inline markup in text is limited to ```code``` and ``**bold**``, which both renderers know.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Image:
    path: Path  # a PNG next to the report
    alt: str


Block = Heading | Text | Bullets | Table | Image


def _md_cell(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _table_md(t: Table) -> str:
    if t.frame.empty:
        return f"{t.caption}\n\n(none)" if t.caption else "(none)"
    frame = t.frame.map(_md_cell).astype(str)
    frame = frame.apply(lambda col: col.str.replace("|", "\\|", regex=False))
    text = frame.to_markdown(index=False, disable_numparse=True)
    return f"{t.caption}\n\n{text}" if t.caption else text


def to_markdown(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            parts.append(b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            parts.append(_table_md(b))
        elif isinstance(b, Image):
            parts.append(f"![{b.alt}]({b.path.name})")
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _table_html(t: Table) -> str:
    if t.frame.empty:
        return f"<p>{_inline(t.caption)}</p><p>(none)</p>" if t.caption else "<p>(none)</p>"
    head = "".join(f"<th>{_inline(str(c))}</th>" for c in t.frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(_md_cell(v))}</td>" for v in row) + "</tr>"
        for row in t.frame.itertuples(index=False)
    )
    caption = f"<p>{_inline(t.caption)}</p>" if t.caption else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML file with every figure inlined as a base64 PNG: it can be mailed or moved alone."""
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = "".join(f"<li>{_inline(i)}</li>" for i in b.items)
            parts.append(f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            parts.append(_table_html(b))
        elif isinstance(b, Image):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            alt = html.escape(b.alt)
            parts.append(f'<p><img src="data:image/png;base64,{data}" alt="{alt}"></p>')
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
