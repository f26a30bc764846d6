"""A report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Blocks are headings, paragraphs, tables (DataFrames) and figures (a PNG beside the
report; the HTML page embeds it as base64, so the page is one file that can be mailed).

Example:
    >>> import pandas as pd
    >>> doc = Document("demo")
    >>> doc.heading("Results").text("UA in %.").table(pd.DataFrame({"a": [1]}))
    Document(title='demo', blocks=[...])
    >>> print(doc.markdown().splitlines()[0])
    # demo
    >>> "<table" in doc.html(base=".")
    True
"""

from __future__ import annotations

import base64
import html as _html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Document", "Heading", "Text", "Table", "Figure"]


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""
    index: bool = False


@dataclass
class Figure:
    path: str  # relative to the report folder
    caption: str


@dataclass
class Document:
    """An ordered list of blocks with a title (see the module docstring)."""

    title: str
    blocks: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Document(title={self.title!r}, blocks=[...])"

    def heading(self, text: str, level: int = 2) -> "Document":
        self.blocks.append(Heading(text, level))
        return self

    def text(self, text: str) -> "Document":
        self.blocks.append(Text(text))
        return self

    def table(self, frame: pd.DataFrame, caption: str = "", index: bool = False) -> "Document":
        self.blocks.append(Table(frame, caption, index))
        return self

    def figure(self, path: str | Path, caption: str) -> "Document":
        self.blocks.append(Figure(str(path), caption))
        return self

    def extend(self, other: "Document") -> "Document":
        self.blocks.extend(other.blocks)
        return self

    def markdown(self) -> str:
        """The report as GitHub Markdown (figures as image links)."""
        lines = [f"# {self.title}", ""]
        for b in self.blocks:
            if isinstance(b, Heading):
                lines += ["#" * max(2, b.level) + " " + b.text, ""]
            elif isinstance(b, Text):
                lines += [b.text, ""]
            elif isinstance(b, Table):
                if b.caption:
                    lines += [b.caption, ""]
                lines += [b.frame.to_markdown(index=b.index), ""]
            elif isinstance(b, Figure):
                lines += [f"![{b.caption}]({b.path})", "", f"*{b.caption}*", ""]
        return "\n".join(lines)

    def html(self, base: str | Path) -> str:
        """One self-contained HTML page; figures under ``base`` are embedded as base64 PNG."""
        parts = [f"<h1>{_html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if isinstance(b, Heading):
                lv = min(6, max(2, b.level))
                parts.append(f"<h{lv}>{_html.escape(b.text)}</h{lv}>")
            elif isinstance(b, Text):
                parts.append(_text_html(b.text))
            elif isinstance(b, Table):
                cap = f"<caption>{_html.escape(b.caption)}</caption>" if b.caption else ""
                tab = b.frame.to_html(index=b.index, border=0, classes="tab", na_rep="")
                parts.append(tab.replace('<table border="0" class="dataframe tab">', f'<table class="tab">{cap}', 1))
            elif isinstance(b, Figure):
                parts.append(_figure_html(Path(base) / b.path, b.caption))
        return _PAGE.format(title=_html.escape(self.title), body="\n".join(parts))


def _inline(text: str) -> str:
    """Escape text; Markdown `code`, **bold** and *italic* spans become tags."""
    out, code = [], False
    for chunk in text.split("`"):
        esc = _html.escape(chunk)
        if not code:
            esc = re.sub(r"\*\*(\S.*?)\*\*", r"<b>\1</b>", esc)
            esc = re.sub(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])", r"<i>\1</i>", esc)
        out.append(f"<code>{esc}</code>" if code else esc)
        code = not code
    return "".join(out)


def _text_html(text: str) -> str:
    """Paragraphs; a run of lines starting with ``- `` is a bullet list."""
    parts = []
    for para in text.split("\n\n"):
        lines = para.splitlines()
        if lines and all(ln.startswith("- ") for ln in lines):
            parts.append("<ul>" + "".join(f"<li>{_inline(ln[2:])}</li>" for ln in lines) + "</ul>")
        else:
            parts.append(f"<p>{_inline(para)}</p>")
    return "\n".join(parts)


def _figure_html(path: Path, caption: str) -> str:
    cap = _html.escape(caption)
    if not path.exists():
        return f"<p class='missing'>figure {_html.escape(str(path.name))} was not written</p>"
    raw = path.read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    width = int.from_bytes(raw[16:20], "big") if raw[:8] == b"\x89PNG\r\n\x1a\n" else 0
    size = f' width="{min(1050, int(0.62 * width))}"' if width else ""
    return (f"<figure><img alt=\"{cap}\"{size} src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{cap}</figcaption></figure>")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; line-height: 1.4; }}
h1 {{ border-bottom: 2px solid #447; }} h2 {{ border-bottom: 1px solid #bbb; margin-top: 1.6em; }}
table.tab {{ border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }}
table.tab th, table.tab td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
table.tab th {{ background: #eef; }} table.tab td:first-child, table.tab th:first-child {{ text-align: left; }} caption {{ caption-side: top; text-align: left; font-style: italic; }}
figure {{ display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; max-width: 100%; }}
figure img {{ max-width: 100%; height: auto; border: 1px solid #ddd; }} figcaption {{ font-size: 0.8em; max-width: 640px; }}
code {{ background: #f3f3f3; padding: 0 3px; }} .missing {{ color: #a00; }}
</style></head>
<body>
{body}
</body></html>
"""
