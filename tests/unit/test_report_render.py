"""The monthly report's Markdown, HTML and PDF (issue 21), rendered from reports built here.

The PDF is checked by turning its pages into images with pypdfium2 and measuring them (page
count, A4 proportions, ink on every page) and by reading its text layer (page numbers, figures).
The first page is saved as /tmp/report-page1.png for a person to look at.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.reports import charts
from quarterdeck.reports.models import MonthlyReport
from quarterdeck.reports.render import md_text, pdf, render
from tests.support.report_samples import EMPTY_NOTES, HOSTILE, OPS_NOTE, empty_report, full_report


@pytest.fixture(scope="module")
def full() -> MonthlyReport:
    return full_report()


@pytest.fixture(scope="module")
def full_pdf(full: MonthlyReport) -> bytes:
    return render(full, "pdf")


def section(md: str, title: str) -> str:
    """The Markdown of one `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, re.MULTILINE | re.DOTALL)
    assert match, f"no section {title!r}"
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Markdown


def test_markdown_has_the_figures_tables_and_notes(full: MonthlyReport) -> None:
    md = render(full, "md").decode()
    runs = section(md, "Runs")
    assert f"| runs submitted | {full.runs.total:,} |" in runs
    assert f"| success rate | {full.runs.succeeded / full.runs.total * 100:.1f} % |" in runs
    # The per-day table: one row per day, each with that day's counts.
    day = full.runs.per_day[12]
    assert (
        f"| 2026-11-13 | {day.total} | {day.succeeded} | {day.failed} | {day.timed_out} | 0 | 0 |"
        in runs
    )
    assert sum(line.startswith("| 2026-11-") for line in runs.splitlines()) == 30
    assert "| --- | ---: | ---: |" in runs  # GFM alignment row, numbers right-aligned
    gateway = section(md, "Gateway calls")
    assert f"| calls | {full.gateway.calls:,} |" in gateway
    assert "| claude-sonnet-4-5 | " in gateway and "9,876,543" in gateway
    latency = section(md, "Latency")
    assert "| run duration | " in latency and "42.50 s | 95.25 s | 171.00 s |" in latency
    assert "gateway first byte" not in latency  # no samples: no row, not a row of n/a
    assert "| uptime | 99.950 % |" in section(md, "Availability")
    incidents = section(md, "Incidents")
    assert "| time to resolve, p50 | 8.5 min |" in incidents and "| 60+ min | 1 |" in incidents
    assert "| auto-recovered | 4 (66.7 % of resolved) |" in incidents
    cost = section(md, "Cost")
    assert "| total | $196.70 |" in cost and "| prompt-cache savings | $13.50 |" in cost
    assert "| acme | $500.00 | n/a | $196.70 | 39.3 % |" in cost
    # A section without data says so in its note and shows nothing else.
    ops = section(md, "Scaling and rollouts")
    assert ops.strip() == OPS_NOTE
    # ROI: labelled an estimate, its inputs beside it.
    roi = section(md, "Return on investment (estimate)")
    assert "**Inputs (supplied by the user, not measured)**" in roi
    assert (
        "| hourly cost | $85.00 |" in roi
        and "| minutes saved per successful run | 30.0 min |" in roi
    )
    assert "| supplied by | the settings |" in roi
    hours = full.roi.hours_saved
    assert hours is not None and f"| hours saved (estimate) | {hours:,.1f} h |" in roi
    roi_value = full.roi.roi
    assert roi_value is not None and f"| ROI (estimate) | {roi_value * 100:,.1f} % |" in roi


def test_an_empty_month_says_so_section_by_section() -> None:
    report = empty_report()
    md = render(report, "md").decode()
    assert "The month was not over" in md
    for title, key in [
        ("Runs", "runs"),
        ("Gateway calls", "gateway"),
        ("Cost", "cost"),
        ("Return on investment (estimate)", "roi"),
        ("Incidents", "incidents"),
    ]:
        assert section(md, title).strip() == md_text(EMPTY_NOTES[key])
    # The only table is the headline; no chart, table or caption in the HTML, every note there.
    assert md.count("| --- |") == 1
    page = render(report, "html").decode()
    assert "<svg" not in page and "<table" not in page and "<figure" not in page
    for note in EMPTY_NOTES.values():
        assert note in page


# ---------------------------------------------------------------------------------------------
# HTML


def test_html_is_self_contained_with_inline_charts(full: MonthlyReport) -> None:
    page = render(full, "html").decode()
    # Charts for runs, gateway, the two latency trends, time to resolve and cost by model.
    assert page.count("<svg") == 6
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "@import" not in page and "<link" not in page and "<script" not in page.lower()
    assert 'Page " counter(page) " of " counter(pages)' in page
    assert "Runs per day" in page and "2026-11-13" not in page  # the chart replaces the daily table
    assert OPS_NOTE in page


def test_user_data_is_escaped_everywhere() -> None:
    report = full_report(tenant=HOSTILE, name=HOSTILE)
    page = render(report, "html").decode()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    md = render(report, "md").decode()
    assert "<script>" not in md and r"\<script\>alert(1)\</script\>" in md
    # A pipe or newline in user data cannot add a column or a row to a Markdown table.
    piped = render(full_report(name="a|b\nc"), "md").decode()
    assert "| a\\|b c |" in piped
    tables: list[list[str]] = [[]]
    for line in piped.splitlines():
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    cells = [{len(re.findall(r"(?<!\\)\|", line)) for line in t} for t in tables if t]
    assert len(cells) > 10 and all(len(c) == 1 for c in cells), cells


# ---------------------------------------------------------------------------------------------
# PDF


def test_pdf_pages_render_as_a4_with_ink_and_page_numbers(full_pdf: bytes) -> None:
    assert full_pdf.startswith(b"%PDF-")
    doc = pdfium.PdfDocument(full_pdf)
    pages = len(doc)
    assert pages >= 1
    for index in range(pages):
        page = doc[index]
        width_pt, height_pt = page.get_size()
        assert abs(width_pt / height_pt - 210 / 297) < 0.005  # A4
        image = page.render(scale=1).to_pil().convert("L")
        inked = sum(image.histogram()[:200]) / (image.width * image.height)
        assert inked > 0.005, f"page {index + 1} is blank ({inked:.2%} ink)"
        text = page.get_textpage().get_text_range()
        assert f"Page {index + 1} of {pages}" in text
        if index == 0:
            first = page.render(scale=2).to_pil()
            assert abs(first.width / first.height - 210 / 297) < 0.005
            assert inked > 0.03, f"first page carries too little ink ({inked:.2%})"
            first.save("/tmp/report-page1.png")
            assert "Quarterdeck monthly report: November 2026" in text
    everything = "\n".join(doc[i].get_textpage().get_text_range() for i in range(pages))
    assert "$196.70" in everything and OPS_NOTE.split(",")[0][:40] in " ".join(everything.split())


def test_pdf_of_an_empty_month_renders_its_notes() -> None:
    doc = pdfium.PdfDocument(render(empty_report(), "pdf"))
    text = " ".join(
        " ".join(doc[i].get_textpage().get_text_range() for i in range(len(doc))).split()
    )
    assert "Nothing was spent in November 2026." in text and "No incidents were opened" in text


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_pdf_fetches_nothing(counting_server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, seen = counting_server
    secret = tmp_path / "secret.css"
    secret.write_text("h1 { color: red }")
    document = (
        f'<html><head><link rel="stylesheet" href="{base}/style.css">'
        f'<link rel="stylesheet" href="file://{secret}"></head>'
        f'<body><h1>x</h1><img src="{base}/logo.png"><p style="background: url({base}/bg.png)">y</p></body></html>'
    )
    assert pdf(document).startswith(b"%PDF-")
    assert seen == []


# ---------------------------------------------------------------------------------------------
# Charts


def test_charts_serialise_and_refuse_empty_series() -> None:
    fig = charts.cost_per_model([HOSTILE, "m"], [1.0, 2.0])
    svg = charts.to_svg(fig)
    assert svg.startswith("<svg") and "<script" not in svg.lower()
    assert charts.to_png(fig, dpi=50).startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(QuarterdeckError, match="no data"):
        charts.runs_per_day([], [], [])
    with pytest.raises(QuarterdeckError, match="different lengths"):
        charts.latency_percentiles(["w1", "w2"], [1.0], [2.0], [3.0])
