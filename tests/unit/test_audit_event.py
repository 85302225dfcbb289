"""AuditEvent validation and what ``prepare`` makes of an event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from quarterdeck.security.audit import Anomaly, AuditEvent, canonical
from quarterdeck.security.audit.writer import prepare


def test_defaults_and_anomaly_coercion() -> None:
    e = AuditEvent(event_type="policy.decision", anomaly={"rule_id": "r", "severity": "high"})
    assert e.tenant == "default" and e.outcome == "success" and e.timestamp.tzinfo is not None
    assert e.anomaly == Anomaly(rule_id="r", severity="high", decision="flag")
    assert e.duration_ms is None
    assert AuditEvent(event_type="x.y", duration_ms=12.6).duration_ms == 13


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tenant": "no spaces"}, "tenant"),
        ({"tenant": ""}, "tenant"),
        ({"event_type": "Run.Created"}, "event_type"),
        ({"event_type": "run..created"}, "event_type"),
        ({"actor": "a" * 300}, "actor"),
        ({"session_id": "nul\x00byte"}, "session_id"),
        ({"timestamp": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"duration_ms": -1}, "duration_ms"),
        ({"anomaly": {"rule_id": "r", "severity": "apocalyptic"}}, "severity"),
        ({"anomaly": {"severity": "high"}}, "rule_id"),
        ({"anomaly": {"rule_id": "r", "severity": "low", "score": 3}}, "unknown fields"),
        ({"sensitive": ["not", "a", "mapping"]}, "sensitive"),
    ],
)
def test_unstorable_events_are_refused_at_construction(
    fields: dict[str, Any], message: str
) -> None:
    values: dict[str, Any] = {"event_type": "run.created", **fields}
    with pytest.raises(ValueError, match=message):
        AuditEvent(**values)


def test_prepare_splits_public_and_sensitive_parts() -> None:
    e = AuditEvent(
        event_type="tool.call",
        tenant="acme",
        actor="key:k",
        session_id="run_1",
        timestamp=datetime(2026, 2, 1, 12, tzinfo=timezone(timedelta(hours=1))),
        operations=["write_file"],
        files_modified=["a.py"],
        source_ip="10.0.0.1",
        network_connections=[{"port": 443, "host": "pypi.org"}],
        user_id="u1",
        anomaly={"rule_id": "egress", "severity": "medium", "decision": "deny", "tags": ["net"]},
        sensitive={"prompt": "secret"},
    )
    p = prepare(e)
    assert p.ts == datetime(2026, 2, 1, 11, tzinfo=UTC) and p.severity == "medium"
    body = p.body_lo + b"null" + p.body_hi
    parsed = json.loads(body)
    assert canonical.dumps(parsed) == body
    assert parsed["network_connections"] == [{"host": "pypi.org", "port": 443}]
    assert parsed["anomaly"] == {
        "decision": "deny",
        "description": "",
        "rule_id": "egress",
        "tags": ["net"],
    }
    assert parsed["user_id"] == "u1" and parsed["source_ip"] == "10.0.0.1"
    assert b"secret" not in body and p.secret == b'{"prompt":"secret"}'
    assert json.loads(p.head[len(b',"head":') :])["timestamp_us"] == 1_769_943_600_000_000


def test_prepare_refuses_payloads_without_a_canonical_form() -> None:
    with pytest.raises(ValueError, match="keys must be strings"):
        prepare(AuditEvent(event_type="tool.call", operations=[{1: "x"}]))
    with pytest.raises(ValueError, match="lone surrogates"):
        prepare(AuditEvent(event_type="tool.call", sensitive={"p": "\ud800"}))
