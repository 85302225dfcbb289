"""The monthly report rendered for people: Markdown, self-contained HTML, and PDF.

Why these choices:
- Every format lays out the same views (``render_layout.layout``), so a figure cannot differ
  between them and a section without data shows its note everywhere.
- HTML is one file with inline CSS and inline SVG charts: it can be mailed, stored and opened
  offline, and it is exactly what the PDF is printed from. Jinja autoescapes every value (tenant
  names, agent types, model names and incident titles are user data); the only markup inserted
  unescaped is the SVG matplotlib wrote, which escapes the text it draws.
- The PDF is WeasyPrint (no browser), A4 with page numbers, and a URL fetcher that refuses every
  scheme, so a report can never make the server fetch anything, however its data was crafted.
- Markdown escapes the characters that would turn user data into markup, links or table cells.
matplotlib and WeasyPrint are imported only when a chart or a PDF is made; when either is missing
(or WeasyPrint's Pango), rendering raises ``Unavailable`` (503) and Markdown and JSON still work.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import TYPE_CHECKING, Literal

from quarterdeck.exceptions import QuarterdeckError, Unavailable
from quarterdeck.reports.models import MonthlyReport
from quarterdeck.reports.render_layout import layout
from quarterdeck.reports.render_view import ReportView, SectionView, Table

if TYPE_CHECKING:
    from jinja2 import Environment

Format = Literal["md", "html", "pdf"]


def render(report: MonthlyReport, fmt: Format) -> bytes:
    """The report as UTF-8 Markdown, UTF-8 HTML, or PDF bytes."""
    view = layout(report)
    if fmt == "md":
        return markdown(view).encode()
    if fmt == "html":
        return html(view).encode()
    if fmt == "pdf":
        return pdf(html(view))
    raise QuarterdeckError(f"unknown report format {fmt!r}")


# ---------------------------------------------------------------------------------------------
# Markdown

# Characters that make markup in CommonMark/GFM wherever they stand; `_` only at a word edge
# (GFM does not emphasise inside words, so `max_turns` stays readable).
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")


def md_text(value: str) -> str:
    """One line of user-visible text made inert in Markdown (and in a table cell)."""
    flat = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in value)
    return _MD_SPECIAL.sub(r"\\\1", " ".join(flat.split()))


def _md_table(
    headers: tuple[str, ...], rows: tuple[tuple[str, ...], ...], numeric: tuple[bool, ...]
) -> list[str]:
    align = [
        "---:" if (numeric[i] if i < len(numeric) else False) else "---"
        for i in range(len(headers))
    ]
    lines = ["| " + " | ".join(md_text(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]
    return lines


def _md_section(s: SectionView) -> list[str]:
    out = [f"## {md_text(s.title)}", ""]
    if not s.has_data:
        return [*out, md_text(s.note or "No data was recorded in this period."), ""]
    if s.note:
        out += [f"> Note: {md_text(s.note)}", ""]
    if s.stats:
        out += [*_md_table(("figure", "value"), s.stats, (False, True)), ""]
    for t in s.tables:
        out += [f"**{md_text(t.caption)}**", "", *_md_table(t.headers, t.rows, t.numeric), ""]
    if s.definition:
        out += [f"*Definition: {md_text(s.definition)}*", ""]
    return out


def markdown(view: ReportView) -> str:
    out = [
        f"# {md_text(view.title)}",
        "",
        f"Scope: {md_text(view.scope)}  ",
        f"Period: {md_text(view.period)}  ",
        f"Generated: {md_text(view.generated)}",
        "",
    ]
    if view.partial_note:
        out += [f"> {md_text(view.partial_note)}", ""]
    out += ["## At a glance", "", *_md_table(("figure", "value"), view.headline, (False, True)), ""]
    for section in view.sections:
        out += _md_section(section)
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# HTML


@cache
def _environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("quarterdeck.reports", "templates"),
        # Always on: the template's name ends in .j2, which select_autoescape would not match.
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def html(view: ReportView) -> str:
    """One self-contained HTML document: inline CSS, inline SVG, nothing fetched."""
    from markupsafe import Markup

    from quarterdeck.reports.charts import to_svg

    try:
        drawn = {
            s.key: [(c.title, Markup(to_svg(c.draw()))) for c in s.charts]
            for s in view.sections
            if s.has_data
        }
    except ImportError as exc:  # the charts are drawn on first use; an install may lack them
        raise Unavailable(f"HTML and PDF reports need matplotlib: {exc}", retry_after=3600) from exc
    shown: dict[str, list[Table]] = {
        s.key: [t for t in s.tables if not t.detail] for s in view.sections
    }
    return (
        _environment().get_template("monthly.html.j2").render(view=view, charts=drawn, tables=shown)
    )


# ---------------------------------------------------------------------------------------------
# PDF


def pdf(document: str) -> bytes:
    """The HTML printed to PDF by WeasyPrint; every URL (http, file, data) is refused."""
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    except (ImportError, OSError) as exc:  # OSError: the Pango libraries are not installed
        raise Unavailable(
            f"PDF reports need WeasyPrint and Pango: {exc}", retry_after=3600
        ) from exc
    refuse_all = URLFetcher(allowed_protocols=(), fail_on_errors=False)
    result: bytes = HTML(string=document, url_fetcher=refuse_all).write_pdf()
    return result
