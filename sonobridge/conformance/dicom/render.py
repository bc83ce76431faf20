"""The statement's blocks as Markdown, self-contained HTML, or PDF (from the HTML, with
WeasyPrint when it is installed)."""

from __future__ import annotations

import html
import re

from sonobridge.conformance.dicom.statement import (
    Block,
    Contents,
    Heading,
    Items,
    Para,
    Table,
)

FORMATS = ("md", "html", "pdf")
PDF_NEEDS = ("PDF needs WeasyPrint and the Pango libraries it draws with: "
             "`pip install weasyprint` (and, on Debian, `apt-get install libpango-1.0-0 "
             "libpangoft2-1.0-0`); or write --format html and print it to PDF")


class RenderError(RuntimeError):
    """A format that cannot be produced here (say what to install)."""


def _headings(blocks: list[Block]) -> list[Heading]:
    return [b for b in blocks if isinstance(b, Heading) and 1 <= b.level <= 2
            and b.text != "Table of contents"]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * (b.level + 1)} {b.text}\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Items):
            out.append("".join(f"- {item}\n" for item in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |",
                     "| " + " | ".join("---" for _ in b.header) + " |"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines) + "\n")
        elif isinstance(b, Contents):
            out.append("".join(f"{'  ' * (h.level - 1)}- [{h.text}](#{h.anchor})\n"
                               for h in _headings(blocks)))
    return "\n".join(out)


_CODE = re.compile(r"`([^`]+)`")
CSS = """body{font-family:system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC",
sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45;color:#1b1b1b}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef2f5}code{background:#f3f3f3;padding:0 .2rem;font-size:.9em}
h1{border-bottom:2px solid #345}h2{border-bottom:1px solid #ccc;margin-top:2rem}
@page{size:A4;margin:1.5cm}"""


def _inline(text: str) -> str:
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text, quote=False))


def html_page(blocks: list[Block]) -> str:
    title = next((b.text for b in blocks if isinstance(b, Heading)), "DICOM Conformance")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            level = min(b.level + 1, 6)
            out.append(f'<h{level} id="{b.anchor}">{_inline(b.text)}</h{level}>')
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Items):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                           for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Contents):
            out.append("<nav><ul>" + "".join(
                f'<li style="margin-left:{(h.level - 1) * 1.5}rem">'
                f'<a href="#{h.anchor}">{_inline(h.text)}</a></li>'
                for h in _headings(blocks)) + "</ul></nav>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def pdf(blocks: list[Block]) -> bytes:
    try:
        from sonobridge.core.pdf.engine import weasyprint as load
        weasyprint = load()
    except (ImportError, OSError) as exc:  # OSError: the Pango libraries are missing
        raise RenderError(f"{PDF_NEEDS} ({exc})") from exc
    data = weasyprint.HTML(string=html_page(blocks)).write_pdf()
    assert isinstance(data, bytes)
    return data


def render(blocks: list[Block], fmt: str) -> bytes:
    """The statement in ``fmt`` (md, html or pdf)."""
    if fmt == "md":
        return markdown(blocks).encode()
    if fmt == "html":
        return html_page(blocks).encode()
    if fmt == "pdf":
        return pdf(blocks)
    raise RenderError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
