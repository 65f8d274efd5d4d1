"""HTML building blocks of the report: escaped tables, embedded figures, and the page around them.

The page must open anywhere, from a CI artifact or an e-mail attachment, so it is one file: the
CSS is inline and figures are `data:image/png;base64` URIs; nothing is fetched from elsewhere.
Every piece of text passes through `html.escape` (feature values come from user data).
"""
from __future__ import annotations

import base64
import html
import math
from typing import Iterable, Optional, Sequence

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #666; font-size: 0.9em; } .note { color: #666; font-size: 0.85em; }
.pass { color: #17803d; font-weight: 600; } .fail { color: #b42318; font-weight: 600; }
.tables { display: flex; flex-wrap: wrap; gap: 1.5em; } img { max-width: 100%; }
nav a { margin-right: 1em; }
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def num(value: Optional[float], digits: int = 4) -> str:
    """Metric formatting shared by every table (and by the tests, which compare against TFMA's values)."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"  # TFMA's NaN: undefined on this slice (e.g. precision with no positive prediction)
    return f"{value:.{digits}f}"


def count(value: Optional[float]) -> str:
    return "-" if value is None else f"{int(round(value)):,}"


def percent(fraction: Optional[float]) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


class Cell:
    """A table cell with its own class (numbers right-aligned, verdicts coloured)."""

    def __init__(self, text, cls: str = ""):
        self.text, self.cls = text, cls


def table(headers: Sequence[str], rows: Iterable[Sequence], table_id: str = "", caption: str = "") -> str:
    """An escaped HTML table; cells may be plain values or `Cell`s."""
    id_attr = f' id="{esc(table_id)}"' if table_id else ""
    out = [f"<table{id_attr}>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, Cell):
                cls = f' class="{esc(cell.cls)}"' if cell.cls else ""
                cells.append(f"<td{cls}>{esc(cell.text)}</td>")
            else:
                cells.append(f"<td>{esc(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def figure(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></figure>'


def paragraph(text: str, cls: str = "") -> str:
    cls_attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{cls_attr}>{esc(text)}</p>"


def section(section_id: str, title: str, body: Sequence[str]) -> str:
    return f'<section id="{esc(section_id)}">\n<h2>{esc(title)}</h2>\n' + "\n".join(body) + "\n</section>"


def page(title: str, meta_lines: Sequence[str], sections: Sequence[tuple]) -> str:
    """The whole document; `sections` are (id, title, html) and get a small table of contents."""
    nav = "<nav>" + "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t, _ in sections) + "</nav>"
    head = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>' \
           f"<style>{CSS}</style></head><body>"
    meta = "".join(f'<div class="meta">{esc(line)}</div>' for line in meta_lines)
    return "\n".join([head, f"<h1>{esc(title)}</h1>", meta, nav] + [body for _, _, body in sections] + ["</body></html>"])
