"""Turning events into chained, encrypted rows, one batch per transaction.

Work is split so that a bad event fails its caller, not a batch: :func:`prepare` (called when the
event is recorded) validates and canonicalises everything that does not depend on the chain
position. :meth:`ChainWriter.write` then, inside one transaction, locks the heads of the batch's
tenants (``SELECT ... FOR UPDATE`` in tenant order, so two processes never fork a chain nor
deadlock), numbers the events, encrypts their sensitive parts (the associated data needs the
``seq``), links the hashes in memory, and writes all rows with one ``COPY``.
"""

from __future__ import annotations

import hashlib
import os
from binascii import hexlify
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from quarterdeck.security.audit import canonical, chain, crypto
from quarterdeck.security.audit import repository as repo
from quarterdeck.security.audit.keys import AuditKeys
from quarterdeck.security.audit.models import Anomaly, AuditEvent
from quarterdeck.store.pool import Database

_MAX_CIPHERS = 4096


@dataclass(slots=True)
class Prepared:
    """An event reduced to what the chain needs: head bytes, body bytes around the sensitive
    envelope, and the plaintext to encrypt.

    The body's keys sort as ``... request_id < sensitive < source_ip < user_id``, so the body is
    encoded once here in two halves and the envelope is spliced between them at write time.
    """

    tenant: str
    ts: datetime
    event_type: str
    actor: str | None
    session_id: str | None
    severity: str | None
    head: bytes
    """``,"head":{...}``: what follows the body in the record."""
    body_lo: bytes
    """The body up to and including ``"sensitive":``."""
    body_hi: bytes
    """The body after the sensitive envelope, from the comma before ``"source_ip"``."""
    secret: bytes | None


def prepare(event: AuditEvent) -> Prepared:
    """Validate and canonicalise ``event``; raises ValueError naming what cannot be stored."""
    anomaly = event.anomaly  # coerced by the event; anomaly_info redoes it if it was replaced
    if anomaly is not None and type(anomaly) is not Anomaly:
        anomaly = event.anomaly_info
    severity = anomaly.severity if anomaly is not None else None
    ts = event.timestamp
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    if ts.year < 1000:
        raise ValueError("timestamp must be after the year 1000")
    head = chain.head_bytes(
        event.actor, event.event_type, event.session_id, severity, chain.timestamp_us(ts)
    )
    lo = canonical.dumps(
        {
            "agent_id": event.agent_id,
            "anomaly": anomaly.public() if anomaly is not None else None,
            "data_accessed": event.data_accessed,
            "duration_ms": event.duration_ms,
            "files_modified": event.files_modified,
            "network_connections": event.network_connections,
            "operations": event.operations,
            "outcome": event.outcome,
            "permissions": event.permissions,
            "request_id": event.request_id,
        }
    )
    enc = canonical.encode_str
    hi = b',"source_ip":%s,"user_id":%s}' % (
        b"null" if event.source_ip is None else enc(event.source_ip).encode(),
        b"null" if event.user_id is None else enc(event.user_id).encode(),
    )
    secret = crypto.plaintext(event.sensitive) if event.sensitive else None
    return Prepared(
        event.tenant,
        ts,
        event.event_type,
        event.actor,
        event.session_id,
        severity,
        b',"head":' + head,
        lo[:-1] + b',"sensitive":',
        hi,
        secret,
    )


class ChainWriter:
    """Appends batches to the per-tenant chains. Safe to use from several processes at once."""

    def __init__(self, db: Database, keys: AuditKeys) -> None:
        self.db = db
        self.keys = keys
        self._ciphers: dict[tuple[str, int], crypto.PayloadCipher] = {}

    async def write(self, batch: Sequence[Prepared]) -> None:
        by_tenant: dict[str, list[Prepared]] = {}
        for p in batch:
            by_tenant.setdefault(p.tenant, []).append(p)
        async with self.db.transaction() as conn:
            heads = await repo.lock_heads(conn, sorted(by_tenant))
            plans: list[_Plan] = []
            for tenant, items in by_tenant.items():
                head = heads[tenant]
                key_id: int | None = head["key_id"]
                cipher = None
                if any(p.secret is not None for p in items):
                    cipher = await self._cipher(conn, tenant, key_id)
                    key_id = cipher.key_id
                plans.append(_Plan(tenant, items, head["seq"], bytes(head["hash"]), key_id, cipher))
            new_heads: list[tuple[str, int, bytes, int | None]] = []
            # A generator, not a list: the COPY sends each ~512 KiB of rows as they are linked,
            # so Postgres stores the first rows while the rest are still being hashed.
            await repo.insert_events(conn, _link(plans, new_heads))
            await repo.update_heads(conn, new_heads)

    async def _cipher(
        self, conn: asyncpg.Connection, tenant: str, key_id: int | None
    ) -> crypto.PayloadCipher:
        """The tenant's current cipher, creating a data key if it has none (or was shredded).

        Runs under the head's row lock, so shredding (which takes the same lock) and key
        creation are serialised with appends in every process.
        """
        if key_id is not None:
            cached = self._ciphers.get((tenant, key_id))
            if cached is not None:
                return cached
            wrapped = await repo.wrapped_key(conn, tenant, key_id)
            if wrapped is not None:
                data_key = crypto.unwrap(self.keys.master, tenant, key_id, wrapped)
                return self._remember(crypto.PayloadCipher(tenant, key_id, data_key))
        key_id = await repo.next_key_id(conn, tenant)
        data_key = crypto.new_data_key()
        wrapped = crypto.wrap(self.keys.master, tenant, key_id, data_key)
        await repo.insert_key(conn, tenant, key_id, wrapped, self.keys.master_fingerprint)
        return self._remember(crypto.PayloadCipher(tenant, key_id, data_key))

    def _remember(self, cipher: crypto.PayloadCipher) -> crypto.PayloadCipher:
        if len(self._ciphers) >= _MAX_CIPHERS:
            self._ciphers.clear()
        self._ciphers[(cipher.tenant, cipher.key_id)] = cipher
        return cipher

    def forget(self, tenant: str) -> None:
        """Drop cached data keys of a shredded tenant from this process's memory."""
        for key in [k for k in self._ciphers if k[0] == tenant]:
            del self._ciphers[key]


@dataclass(slots=True)
class _Plan:
    """One tenant's part of a batch, with its chain head as locked."""

    tenant: str
    items: list[Prepared]
    seq: int
    prev: bytes
    key_id: int | None
    cipher: crypto.PayloadCipher | None


def _link(
    plans: list[_Plan], new_heads: list[tuple[str, int, bytes, int | None]]
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``plans``: numbered, encrypted and hash-linked (``chain.link``, inlined: this
    is the hot loop). Appends each tenant's new head to ``new_heads`` once its rows are out."""
    sha256, suffix = hashlib.sha256, chain.SUFFIX
    for plan in plans:
        tenant, seq, prev, cipher = plan.tenant, plan.seq, plan.prev, plan.cipher
        tjs = chain.tenant_json(tenant)
        salt = os.urandom(4)
        for p in plan.items:
            seq += 1
            body = (
                p.body_lo
                + (
                    cipher.seal(seq, p.secret, salt)
                    if cipher is not None and p.secret is not None
                    else b"null"
                )
                + p.body_hi
            )
            digest = sha256(
                b'{"body":' + body + p.head + suffix % (hexlify(prev), seq, tjs)
            ).digest()
            yield (tenant, seq, p.ts, p.event_type, p.actor, p.session_id, p.severity, body, digest)
            prev = digest
        new_heads.append((tenant, seq, prev, plan.key_id))
