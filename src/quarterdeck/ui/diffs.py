"""A run's diff as highlighted HTML, drawn on the server: pure (text in, markup out).

Pygments' diff lexer marks each line (added ``gi``, deleted ``gd``, hunk ``gu``, header ``gh``)
with CSS classes that ``app.css`` colours; no script runs in the browser and no inline style is
needed under the page's CSP. Pygments escapes every character of the text it wraps, so a diff
that adds ``<script>`` shows it as text. A diff can be far larger than a page should hold: the
rendering stops at :data:`MAX_LINES` lines or :data:`MAX_BYTES` bytes, on a line boundary, and
the page links to the whole text instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import bygroups, inherit
from pygments.lexers import DiffLexer
from pygments.token import Generic, Whitespace

MAX_BYTES = 2 * 1024 * 1024
MAX_LINES = 20_000
INLINE_LINES = 200
"""A diff this short is shown on the run page itself, not only on its own page."""


class GitDiffLexer(DiffLexer):  # type: ignore[misc]  # the stubs type lexers as Any
    """Pygments' diff lexer, knowing a file's header: from its ``diff`` line to its first hunk,
    ``--- a/x`` and ``+++ b/x`` name the files (headings), they are not a deleted and an added
    line. Only there: in a hunk, ``--- x`` is a deleted line that began with ``--``."""

    name = "Git diff"
    aliases: list[str] = []
    _heading = bygroups(Generic.Heading, Whitespace)  # type: ignore[no-untyped-call]
    _hunk = bygroups(Generic.Subheading, Whitespace)  # type: ignore[no-untyped-call]
    tokens = {
        "root": [(r"(diff .*)(\n)", _heading, "header"), inherit],
        "header": [(r"(@.*)(\n)", _hunk, "#pop"), (r"(.*)(\n)", _heading)],
    }


@dataclass(frozen=True, slots=True)
class Highlighted:
    html: Markup
    """Lines of ``<span class="gi">…</span>`` to put in ``<div class="diff"><pre>``."""
    shown_lines: int
    total_lines: int
    total_bytes: int

    @property
    def truncated(self) -> bool:
        return self.shown_lines < self.total_lines


def line_count(text: str) -> int:
    return text.count("\n") + (0 if not text or text.endswith("\n") else 1)


def head(text: str, max_lines: int, max_bytes: int) -> str:
    """The first whole lines of ``text``: at most ``max_lines`` of them and ``max_bytes`` of
    UTF-8 (a single longer line is cut, rather than nothing shown)."""
    lines = text.splitlines(keepends=True)[:max_lines]
    kept: list[str] = []
    size = 0
    for line in lines:
        n = len(line.encode("utf-8"))
        if size + n > max_bytes:
            if not kept:  # one enormous line: show its start
                kept.append(line.encode("utf-8")[:max_bytes].decode("utf-8", "ignore"))
            break
        kept.append(line)
        size += n
    return "".join(kept)


def highlight(text: str, *, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> Highlighted:
    shown = head(text, max_lines, max_bytes)
    lexer = GitDiffLexer(stripnl=False, ensurenl=True)
    html: str = pygments_highlight(shown, lexer, HtmlFormatter(nowrap=True)) if shown else ""
    return Highlighted(
        html=Markup(html),  # Pygments escaped every character it wrapped
        shown_lines=line_count(shown),
        total_lines=line_count(text),
        total_bytes=len(text.encode("utf-8")),
    )
