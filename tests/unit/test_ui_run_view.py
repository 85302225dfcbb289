"""The run page's pure parts: events as timeline rows and turns, and the highlighted diff."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quarterdeck.runs.models import RunEvent
from quarterdeck.ui.diffs import highlight, line_count
from quarterdeck.ui.run_view import Timeline, clip, row

TS = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(i: int, kind: str, data: dict[str, Any], turn: int | None = None) -> RunEvent:
    return RunEvent(id=i, run_id="run_x", ts=TS, type=kind, turn=turn, data=data)


def test_each_event_type_tells_its_part_of_the_story() -> None:
    events = [
        event(1, "status", {"status": "queued"}),
        event(2, "status", {"status": "running", "attempt": 2, "worker": "w1", "resumed": True}),
        event(
            3,
            "turn",
            {
                "model": "claude-sonnet-4-5",
                "usage": {
                    "input_tokens": 1200,
                    "output_tokens": 80,
                    "cache_creation_input_tokens": 30,
                    "cache_read_input_tokens": 900,
                },
                "cost_usd": 0.0123,
                "latency_s": 1.5,
                "stop_reason": "max_tokens",
                "text": "Let me <b>look</b>.\n" * 20,
            },
            turn=1,
        ),
        event(
            4,
            "tool_call",
            {
                "tool": "run_command",
                "input": {"command": "sudo true"},
                "output": "Traceback\nboom",
                "is_error": True,
                "policy": {
                    "action": "require_approval",
                    "reason": "elevated privileges",
                    "approval": {"status": "rejected", "decided_by": "key:ops", "note": "no"},
                },
            },
            turn=1,
        ),
        event(5, "tool_results", {"message": {}}, turn=1),
        event(6, "tool_call", {"tool": "list_files", "input": {"path": "."}, "output": "a.py"}),
        event(7, "cancel_requested", {}),
        event(8, "result", {"changed_files": ["a.py", "b.py"]}),
        event(9, "metered", {"calls": 3, "input_tokens": 10, "cost_usd": 0.5, "turns": 2}),
        event(10, "something_new", {"why": "future"}),
        event(11, "status", {"status": "failed", "error": "it broke", "error_type": "Boom"}),
    ]
    timeline = Timeline()
    timeline.add(events)
    rows = {r.id: r for r in timeline.rows}
    assert 5 not in rows, "tool_results repeat what each tool_call shows"
    assert timeline.last_id == 11 and timeline.dropped == 0

    assert rows[1].badge == "queued" and rows[1].kind == "status"
    assert rows[2].facts == ("attempt 2", "resumed from its checkpoint", "on w1")

    turn = rows[3]
    assert turn.label == "turn 1" and turn.summary == "claude-sonnet-4-5"
    assert "900 cache read" in turn.facts and "30 cache write" in turn.facts
    assert "$0.0123" in turn.facts and "stopped: max_tokens" in turn.facts
    assert turn.body is not None and turn.body.count("\n") == 7 and "chars)" in turn.body
    assert "<b>look</b>" in turn.body, "plain text: the template escapes, not this module"

    held = rows[4]
    assert held.decision == "ask" and held.error and held.audited
    assert held.summary == "run_command command=sudo true"
    assert held.facts == ("elevated privileges", "rejected by key:ops (no)")
    assert held.body == "Traceback\nboom"
    assert rows[6].decision == "allow" and rows[6].facts == () and not rows[6].error

    assert rows[7].kind == "cancel"
    assert rows[8].summary == "2 file(s) changed" and rows[8].facts == ('["a.py", "b.py"]',)
    assert rows[9].summary == "3 gateway call(s) · 10 tokens" and "$0.5000" in rows[9].facts
    assert rows[10].label == "something_new" and rows[10].summary == "why=future"
    assert rows[11].badge == "failed" and rows[11].error and rows[11].body == "it broke"

    (line,) = timeline.turns
    assert (line.turn, line.input, line.output, line.cache_write, line.cache_read) == (
        1,
        1200,
        80,
        30,
        900,
    )
    assert line.cost == 0.0123


def test_a_long_run_keeps_its_last_rows_and_counts_what_it_left_out() -> None:
    timeline = Timeline(cap=3)
    timeline.add(event(i, "status", {"status": "running"}) for i in range(1, 11))
    assert [r.id for r in timeline.rows] == [8, 9, 10]
    assert timeline.dropped == 7 and timeline.made == 10
    # Bad values in an event read as nothing rather than break the page.
    broken = row(event(11, "turn", {"usage": {"input_tokens": "x"}, "cost_usd": [1]}, turn=2))
    assert broken is not None and broken.facts[0] == "0 in"


def test_clip_says_how_much_it_cut() -> None:
    assert clip("short", 10, 2) == "short"
    assert clip("a\nb\nc", 100, 2) == "a\nb … (5 chars)"
    assert clip("x" * 50, 10, 5) == "x" * 10 + " … (50 chars)"


def test_a_diff_is_highlighted_and_what_it_adds_stays_text() -> None:
    diff = (
        "diff --git a/page.html b/page.html\n--- a/page.html\n+++ b/page.html\n"
        "@@ -1 +1 @@\n-<p>old</p>\n+<script>alert('x')</script>\n"
    )
    shown = highlight(diff)
    assert "<script>" not in shown.html
    assert "&lt;script&gt;alert(" in shown.html
    assert '<span class="gi">+&lt;script&gt;' in shown.html
    assert '<span class="gd">-&lt;p&gt;old&lt;/p&gt;</span>' in shown.html
    assert '<span class="gu">@@ -1 +1 @@</span>' in shown.html
    assert not shown.truncated and shown.total_lines == 6 == line_count(diff)
    # The file header names the files; in a hunk, a line starting "---" is a deleted "--" line.
    assert '<span class="gh">--- a/page.html</span>' in shown.html
    assert '<span class="gh">+++ b/page.html</span>' in shown.html
    sql = highlight(
        "diff --git a/q.sql b/q.sql\n--- a/q.sql\n+++ b/q.sql\n@@ -1 +0,0 @@\n--- note\n"
    )
    assert '<span class="gd">--- note</span>' in sql.html


def test_a_large_diff_is_cut_on_a_line_boundary() -> None:
    diff = "".join(f"+line {i}\n" for i in range(100))
    by_lines = highlight(diff, max_lines=10)
    assert by_lines.truncated and (by_lines.shown_lines, by_lines.total_lines) == (10, 100)
    assert "+line 9<" in by_lines.html and "+line 10<" not in by_lines.html
    by_bytes = highlight(diff, max_bytes=25)  # "+line 0\n" is 8 bytes: three whole lines
    assert by_bytes.shown_lines == 3 and by_bytes.total_bytes == len(diff)
    one_huge_line = highlight("+" + "é" * 100, max_bytes=11)
    assert one_huge_line.shown_lines == 1 and "é" * 5 in one_huge_line.html
    assert highlight("").html == "" and highlight("").total_lines == 0
