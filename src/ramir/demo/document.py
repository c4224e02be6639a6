"""A small document model and its two renderings, Markdown and HTML.

A report is built once as a :class:`Document` (paragraphs, tables, images, lists, code
and sections of them), then :func:`to_markdown` and :func:`to_html` write the same content
in each format. Paragraph and list text may hold the two inline marks ``**bold**`` and
```code```; table cells are plain text (escaped for HTML, ``|`` escaped for Markdown).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field


@dataclass
class Paragraph:
    text: str
    css_class: str | None = None  # HTML only


@dataclass
class Cell:
    """A table cell: ``text``, an optional second line ``sub`` (Markdown: ``text / sub``;
    HTML: a smaller line under it) and whether it is the best of its column (bold)."""

    text: str
    sub: str | None = None
    best: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[str | Cell]]
    row_headers: bool = True  # the first cell of each row labels it


@dataclass
class Image:
    src: str
    alt: str


@dataclass
class BulletList:
    items: list[str]


@dataclass
class CodeBlock:
    text: str
    language: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


Block = Paragraph | Table | Image | BulletList | CodeBlock | Section


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)
    page_title: str = ""  # the HTML <title> (default: ``title``)
    css: str = ""


# ----------------------------------------------------------------------------- Markdown


def to_markdown(doc: Document) -> str:
    chunks = [f"# {doc.title}", *(_md_block(b, 2) for b in doc.blocks)]
    return "\n\n".join(c for c in chunks if c) + "\n"


def _md_cell(cell: str | Cell) -> str:
    if isinstance(cell, str):
        cell = Cell(cell)
    text = cell.text if cell.sub is None else f"{cell.text} / {cell.sub}"
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if cell.best and text else text


def markdown_table(table: Table) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in table.header) + " |",
        "|---|" + "---|" * (len(table.header) - 1),
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_block(block: Block, level: int) -> str:
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Table):
        return markdown_table(block)
    if isinstance(block, Image):
        return f"![{block.alt}]({block.src})"
    if isinstance(block, BulletList):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, CodeBlock):
        return f"```{block.language}\n{block.text}\n```"
    if isinstance(block, Section):
        inner = [_md_block(b, level + 1) for b in block.blocks]
        return "\n\n".join(c for c in [f"{'#' * level} {block.title}", *inner] if c)
    raise TypeError(f"not a document block: {block!r}")


# ----------------------------------------------------------------------------- HTML


def md_inline(text: str) -> str:
    """HTML of one Markdown paragraph's inline marks: ``**bold**`` and ```code```."""
    code = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(code))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def to_html(doc: Document) -> str:
    body = "\n".join(_html_block(b, 2) for b in doc.blocks)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{html.escape(doc.page_title or doc.title)}</title>\n"
        + (f"<style>\n{doc.css}\n</style>" if doc.css else "")
        + "</head><body>\n"
        f"<h1>{html.escape(doc.title)}</h1>\n{body}\n</body></html>\n"
    )


def _html_cell(cell: str | Cell, tag: str) -> str:
    if isinstance(cell, str):
        cell = Cell(cell)
    inner = html.escape(cell.text)
    if cell.sub is not None:
        inner += f"<br><small>{html.escape(cell.sub)}</small>"
    return f"<{tag}{' class=best' if cell.best else ''}>{inner}</{tag}>"


def html_table(table: Table) -> str:
    head = "".join(_html_cell(h, "th") for h in table.header)
    rows = "".join(
        "<tr>"
        + "".join(
            _html_cell(c, "th" if table.row_headers and i == 0 else "td") for i, c in enumerate(row)
        )
        + "</tr>"
        for row in table.rows
    )
    return f"<div class=scroll><table><tr>{head}</tr>{rows}</table></div>"


def _html_block(block: Block, level: int) -> str:
    if isinstance(block, Paragraph):
        cls = f' class="{html.escape(block.css_class)}"' if block.css_class else ""
        return f"<p{cls}>{md_inline(block.text)}</p>"
    if isinstance(block, Table):
        return html_table(block)
    if isinstance(block, Image):
        return f'<img src="{html.escape(block.src)}" alt="{html.escape(block.alt)}">'
    if isinstance(block, BulletList):
        return "<ul>" + "".join(f"<li>{md_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, CodeBlock):
        return f"<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Section):
        inner = "\n".join(_html_block(b, level + 1) for b in block.blocks)
        return f"<h{level}>{html.escape(block.title)}</h{level}>\n{inner}"
    raise TypeError(f"not a document block: {block!r}")
