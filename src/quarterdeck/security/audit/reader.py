"""Reading events back: search pages, JSON Lines export, and decryption of the sensitive part.

Data keys are fetched from the database for every page rather than cached, so shredding a tenant
takes effect at once in every process: the next read finds no key and returns
``{"shredded": true}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.security.audit import chain, crypto
from quarterdeck.security.audit import repository as repo
from quarterdeck.security.audit.keys import AuditKeys
from quarterdeck.security.audit.models import EventFilter, EventPage, StoredEvent
from quarterdeck.store.pool import Database

EXPORT_BATCH = 2_000


def encode_cursor(ts: datetime, tenant: str, seq: int) -> str:
    raw = f"{ts.isoformat()}|{tenant}|{seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, tenant, seq = raw.split("|")
        when = datetime.fromisoformat(ts)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, tenant, int(seq)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ValidationFailed(
            "cursor is malformed", errors=[{"field": "cursor", "message": "malformed"}]
        ) from None


class Reader:
    def __init__(self, db: Database, keys: AuditKeys) -> None:
        self.db = db
        self.keys = keys

    async def search(self, f: EventFilter) -> EventPage:
        after = decode_cursor(f.cursor) if f.cursor else None
        async with self.db.acquire() as conn:
            rows = await repo.search(conn, f, after)
            more = len(rows) > f.limit
            rows = rows[: f.limit]
            items = await self._events(conn, rows)
        last = rows[-1] if rows else None
        cursor = encode_cursor(last["ts"], last["tenant"], last["seq"]) if more and last else None
        return EventPage(items=items, next_cursor=cursor)

    async def export(
        self,
        tenant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events in chain order, each with ``prev_hash`` and ``record``: the exact canonical
        bytes that were hashed, so anyone can recompute ``sha256(record) == hash`` offline."""
        after: tuple[str, int] = ("", 0)
        while True:
            async with self.db.acquire() as conn:
                rows = await repo.export_rows(conn, tenant, since, until, after, EXPORT_BATCH)
                events = await self._events(conn, rows)
            for row, event in zip(rows, events, strict=True):
                prev = bytes(row["prev"])
                record, _ = chain.link(
                    bytes(row["pre"]), prev, row["seq"], chain.tenant_json(row["tenant"])
                )
                line = event.model_dump(mode="json")
                line["prev_hash"] = prev.hex()
                line["record"] = record.decode("utf-8")
                yield line
            if len(rows) < EXPORT_BATCH:
                return
            after = (rows[-1]["tenant"], rows[-1]["seq"])

    async def _events(
        self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
    ) -> list[StoredEvent]:
        bodies = [json.loads(bytes(r["body"])) for r in rows]
        wanted = {
            (r["tenant"], int(b["sensitive"]["key"]))
            for r, b in zip(rows, bodies, strict=True)
            if isinstance(b.get("sensitive"), dict) and "key" in b["sensitive"]
        }
        ciphers: dict[tuple[str, int], crypto.PayloadCipher | None] = {}
        for (tenant, key_id), blob in (await repo.wrapped_keys(conn, wanted)).items():
            if blob is None:
                continue  # shredded
            try:
                data_key = crypto.unwrap(self.keys.master, tenant, key_id, blob)
            except crypto.DecryptError:  # wrapped under another master key, or altered
                ciphers[(tenant, key_id)] = None
                continue
            ciphers[(tenant, key_id)] = crypto.PayloadCipher(tenant, key_id, data_key)
        return [self._event(r, b, ciphers) for r, b in zip(rows, bodies, strict=True)]

    @staticmethod
    def _event(
        row: asyncpg.Record,
        body: dict[str, Any],
        ciphers: dict[tuple[str, int], crypto.PayloadCipher | None],
    ) -> StoredEvent:
        """``ciphers`` lacks shredded keys and maps keys that do not unwrap to None."""
        sensitive: dict[str, Any] | None = None
        envelope = body.get("sensitive")
        if isinstance(envelope, dict):
            key = (row["tenant"], int(envelope.get("key", 0)))
            cipher = ciphers.get(key)
            if key not in ciphers:
                sensitive = dict(crypto.SHREDDED)
            elif cipher is None:
                sensitive = dict(crypto.UNDECRYPTABLE)
            else:
                try:
                    sensitive = cipher.open(row["seq"], envelope)
                except crypto.DecryptError:
                    sensitive = dict(crypto.UNDECRYPTABLE)
        anomaly = body.get("anomaly")
        if row["severity"] is not None:
            anomaly = {**(anomaly or {}), "severity": row["severity"]}
        return StoredEvent(
            tenant=row["tenant"],
            seq=row["seq"],
            hash=bytes(row["hash"]).hex(),
            timestamp=row["ts"],
            event_type=row["event_type"],
            actor=row["actor"],
            session_id=row["session_id"],
            agent_id=body.get("agent_id"),
            user_id=body.get("user_id"),
            request_id=body.get("request_id"),
            source_ip=body.get("source_ip"),
            operations=body.get("operations") or [],
            data_accessed=body.get("data_accessed") or [],
            files_modified=body.get("files_modified") or [],
            network_connections=body.get("network_connections") or [],
            permissions=body.get("permissions") or [],
            duration_ms=body.get("duration_ms"),
            outcome=body.get("outcome"),
            anomaly=anomaly,
            sensitive=sensitive,
        )
