"""Incident use-cases: open (deduplicated), acknowledge, resolve, escalate, and the numbers.

Every state change writes its timeline entry and the notifications it calls for in the same
transaction, then asks the notifier to deliver. Endpoints, the Alertmanager receiver, health
checks and auto-recovery all come through here, so they share one set of rules.

Maintenance windows (platform-wide, declared through ``/v1/maintenance``) never stop an incident
being opened, deduplicated or recorded; they only hold its notifications (the notifier's
outbox). An incident resolved inside a window before its page went out has its trigger,
escalation and all-clear suppressed here, in the resolve's own transaction, so nothing held can
page after the fact; its timeline says which window swallowed them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from quarterdeck import metrics
from quarterdeck.exceptions import InvalidState, NotFound
from quarterdeck.incidents import outbox_repository as outbox
from quarterdeck.incidents import repository as repo
from quarterdeck.incidents.models import (
    AlertmanagerResult,
    AlertmanagerWebhook,
    Incident,
    IncidentDetail,
    IncidentFilter,
    IncidentPage,
    IncidentStatus,
    ResolvedBy,
    Severity,
    Source,
    covering_window,
    silenced,
)
from quarterdeck.incidents.notify import Notifier, record_silence
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.ids import new_id
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

ALERT_SEVERITY = {
    "critical": Severity.critical,
    "page": Severity.critical,
    "high": Severity.high,
    "error": Severity.high,
    "major": Severity.high,
    "warning": Severity.medium,
    "medium": Severity.medium,
    "low": Severity.low,
    "minor": Severity.low,
    "info": Severity.info,
    "none": Severity.info,
}
_COMPONENT_LABELS = ("service", "dependency", "agent_type", "instance", "job", "slo")


class IncidentService:
    def __init__(
        self,
        db: Database,
        notifier: Notifier | None = None,
        *,
        escalate_after_s: float = 4 * 3600.0,
        inline_notifications: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.escalate_after_s = escalate_after_s
        # Inline: the call returns after delivery (tests, CLI tools). Background: the API answers
        # at once and the outbox covers a crash before the send.
        self.inline_notifications = inline_notifications
        self.clock = clock

    # -- lifecycle ---------------------------------------------------------------------------
    async def open_or_update(
        self,
        service: str,
        severity: Severity | str,
        title: str,
        description: str = "",
        dedup_key: str | None = None,
        *,
        source: Source | str = Source.manual,
        fingerprint: str | None = None,
        affected_components: list[str] | None = None,
        suggested_actions: list[str] | None = None,
        details: dict[str, Any] | None = None,
        opened_at: datetime | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident, or update the unresolved one with the same ``dedup_key``.

        Returns (incident, created). Repeats never duplicate: the partial unique index settles a
        race between replicas, and the loser updates the winner's row.
        """
        sev = Severity(severity)
        values: dict[str, Any] = {
            "service": service,
            "severity": sev.value,
            "title": title,
            "description": description,
            "affected_components": list(affected_components or []),
            "suggested_actions": list(suggested_actions or []),
            "details": dict(details or {}),
            "source": Source(source).value,
            "dedup_key": dedup_key or f"{Source(source).value}:{service}:{title}",
            "fingerprint": fingerprint,
            "opened_at": opened_at,
        }
        for _ in range(3):
            async with self.db.transaction() as conn:
                existing = await repo.find_unresolved(conn, values["dedup_key"], lock=True)
                if existing is not None:
                    incident = await repo.record_recurrence(conn, existing.id, values)
                    changes = _changes(existing, incident)
                    await repo.append_event(
                        conn,
                        incident.id,
                        "recurred",
                        {"occurrences": incident.occurrences, "changes": changes},
                    )
                    created = False
                else:
                    inserted = await repo.insert_incident(conn, {"id": new_id("inc"), **values})
                    if inserted is None:
                        continue  # another writer opened it first; update theirs
                    incident, created = inserted, True
                    await repo.append_event(
                        conn,
                        incident.id,
                        "opened",
                        {"severity": sev.value, "source": values["source"], "title": title},
                    )
                if self.notifier is not None:
                    await outbox.enqueue_notifications(
                        conn, incident.id, self.notifier.on_open(incident)
                    )
            await self._deliver(incident.id)
            if created:
                log.warning("incident_opened", id=incident.id, service=service, severity=sev)
            return incident, created
        raise InvalidState(f"could not open or update incident {values['dedup_key']!r}")

    async def acknowledge(self, incident_id: str, actor: str) -> Incident:
        """Someone owns it now: stops stale escalation. Repeating it changes nothing."""
        async with self.db.transaction() as conn:
            incident = await repo.acknowledge(conn, incident_id, actor)
            if incident is not None:
                await repo.append_event(conn, incident_id, "acknowledged", {"actor": actor})
                return incident
            current = await self._require(conn, incident_id)
        if current.status is IncidentStatus.resolved:
            raise InvalidState(f"incident {incident_id} is already resolved")
        return current

    async def resolve(
        self,
        incident_id: str,
        by: ResolvedBy | str = ResolvedBy.human,
        note: str | None = None,
        *,
        at: datetime | None = None,
    ) -> Incident:
        """Resolve; repeating it returns the resolved incident and sends nothing more."""
        who = ResolvedBy(by)
        suppressed = 0
        async with self.db.transaction() as conn:
            incident = await repo.resolve(conn, incident_id, who, note, at)
            if incident is None:
                return await self._require(conn, incident_id)
            await repo.append_event(
                conn,
                incident_id,
                "resolved",
                {"by": who.value, "note": note, "duration_s": incident.duration_s},
            )
            if self.notifier is not None:
                paged = await outbox.paged_channels(conn, incident_id)
                await outbox.enqueue_notifications(
                    conn, incident_id, self.notifier.on_resolve(incident, paged)
                )
                suppressed = await self._suppress_inside_window(conn, incident, self.notifier)
        if suppressed:
            metrics.NOTIFICATIONS_SILENCED.labels("suppressed").inc(suppressed)
        await self._deliver(incident_id)
        log.info("incident_resolved", id=incident_id, by=who.value, took_s=incident.duration_s)
        return incident

    @staticmethod
    async def _suppress_inside_window(
        conn: asyncpg.Connection, incident: Incident, notifier: Notifier
    ) -> int:
        """Resolved inside a window: drop every unsent notification the window silences (its
        page never went out, so neither does its all-clear). Waits for rows another sender has
        locked, so a row being held right now is suppressed too; one already being sent is left
        to finish. Returns how many."""
        at = incident.resolved_at
        assert at is not None
        window = covering_window(await outbox.windows_covering(conn, at), at)
        if window is None:
            return 0
        candidates = await outbox.silence_candidates(
            conn,
            incident.id,
            statuses=["pending", "held"],
            failed_below=notifier.attempt_cap,
            skip_locked=False,
        )
        ids = [n.id for n, paged in candidates if silenced(n.kind, paged)]
        dropped = await outbox.silence(conn, ids, "suppressed", window) if ids else []
        for n in dropped:
            await record_silence(conn, n, "suppressed")
        if dropped:
            log.info("notifications_suppressed", id=incident.id, window=window.id, n=len(dropped))
        return len(dropped)

    async def escalate(self, incident_id: str, reason: str) -> Incident | None:
        """Call for a human (e.g. auto-recovery failed). Once per incident; None if done before."""
        async with self.db.transaction() as conn:
            incident = await repo.mark_escalated(conn, incident_id)
            if incident is None:
                await self._require(conn, incident_id)
                return None
            await self._record_escalation(conn, incident, reason)
        await self._deliver(incident_id)
        return incident

    async def escalate_stale(
        self, now: datetime | None = None, older_than_s: float | None = None
    ) -> list[Incident]:
        """Escalate unacknowledged incidents open longer than ``older_than_s``, each once."""
        now = now or self.clock()
        age = self.escalate_after_s if older_than_s is None else older_than_s
        reason = f"open and unacknowledged for more than {int(age)}s"
        async with self.db.transaction() as conn:
            stale = await repo.escalate_stale(conn, now - timedelta(seconds=age), now)
            for incident in stale:
                await self._record_escalation(conn, incident, reason)
        for incident in stale:
            await self._deliver(incident.id)
        return stale

    async def _record_escalation(
        self, conn: asyncpg.Connection, incident: Incident, reason: str
    ) -> None:
        await repo.append_event(conn, incident.id, "escalated", {"reason": reason})
        if self.notifier is not None:
            await outbox.enqueue_notifications(conn, incident.id, self.notifier.on_escalation())
        log.warning("incident_escalated", id=incident.id, reason=reason)

    # -- Alertmanager ----------------------------------------------------------------------------
    async def ingest_alertmanager(self, payload: AlertmanagerWebhook) -> AlertmanagerResult:
        """Each alert is an incident keyed by its fingerprint; ``resolved`` resolves it."""
        result = AlertmanagerResult(
            received=len(payload.alerts), opened=[], updated=[], resolved=[], ignored=0
        )
        for alert in payload.alerts:
            key = f"alertmanager:{alert.fingerprint}"
            labels = {**payload.commonLabels, **alert.labels}
            annotations = {**payload.commonAnnotations, **alert.annotations}
            if alert.status == "resolved":
                async with self.db.acquire() as conn:
                    existing = await repo.find_unresolved(conn, key)
                if existing is None:
                    result.ignored += 1  # never seen firing, or already resolved
                    continue
                ends = alert.endsAt if alert.endsAt and alert.endsAt.year > 1 else None
                await self.resolve(existing.id, ResolvedBy.alertmanager, "alert resolved", at=ends)
                result.resolved.append(existing.id)
                continue
            name = labels.get("alertname", "alert")
            actions = [annotations["runbook_url"]] if annotations.get("runbook_url") else []
            starts = alert.startsAt if alert.startsAt and alert.startsAt.year > 1 else None
            incident, created = await self.open_or_update(
                labels.get("service") or labels.get("job") or "alertmanager",
                ALERT_SEVERITY.get(labels.get("severity", "").lower(), Severity.medium),
                annotations.get("summary") or name,
                annotations.get("description", ""),
                key,
                source=Source.alertmanager,
                fingerprint=alert.fingerprint,
                affected_components=[
                    f"{k}={labels[k]}" for k in _COMPONENT_LABELS if labels.get(k)
                ],
                suggested_actions=actions,
                details={"labels": labels, "generator_url": alert.generatorURL},
                opened_at=starts,
            )
            (result.opened if created else result.updated).append(incident.id)
        return result

    # -- reads -----------------------------------------------------------------------------------
    async def get(self, incident_id: str) -> IncidentDetail:
        async with self.db.acquire() as conn:
            incident = await self._require(conn, incident_id)
            timeline = await repo.list_events(conn, incident_id)
            sent = await outbox.list_notifications(conn, incident_id)
        return IncidentDetail(**incident.model_dump(), timeline=timeline, notifications=sent)

    async def list(self, f: IncidentFilter | None = None, **filters: Any) -> IncidentPage:
        f = f or IncidentFilter(**filters)
        async with self.db.acquire() as conn:
            items = await repo.list_incidents(conn, f)
        return IncidentPage(
            items=items, next_cursor=items[-1].id if len(items) == f.limit else None
        )

    async def mttr(self, window_days: float = 30) -> float | None:
        """Mean seconds from open to resolve over incidents resolved in the window."""
        async with self.db.acquire() as conn:
            return await repo.mttr(conn, self.clock() - timedelta(days=window_days))

    async def auto_recovery_share(self, window_days: float = 30) -> float | None:
        """Share of incidents resolved in the window that healed without a human."""
        async with self.db.acquire() as conn:
            return await repo.auto_recovery_share(conn, self.clock() - timedelta(days=window_days))

    async def refresh_metrics(self) -> None:
        async with self.db.acquire() as conn:
            counts, oldest = await repo.open_stats(conn)
        for sev in Severity:
            metrics.INCIDENTS_OPEN.labels(sev.value).set(counts.get(sev.value, 0))
        metrics.INCIDENT_OLDEST_OPEN_AGE.set(oldest)
        metrics.MTTR.set(await self.mttr(30) or 0.0)

    # -- background ------------------------------------------------------------------------------
    async def tick(self) -> None:
        """One sweep: escalate stale incidents, retry undelivered notifications, mirror gauges."""
        await self.escalate_stale()
        if self.notifier is not None:
            await self.notifier.deliver()
        await self.refresh_metrics()

    async def run_forever(self, interval_s: float = 15.0) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # the database may be restarting; try again next time
                log.warning("incident_sweep_failed", error=str(exc))
            await asyncio.sleep(interval_s)

    async def aclose(self) -> None:
        if self.notifier is not None:
            with contextlib.suppress(Exception):
                await self.notifier.aclose()

    # -- helpers ---------------------------------------------------------------------------------
    async def _require(self, conn: asyncpg.Connection, incident_id: str) -> Incident:
        incident = await repo.get_incident(conn, incident_id)
        if incident is None:
            raise NotFound(f"incident {incident_id} not found")
        return incident

    async def _deliver(self, incident_id: str) -> None:
        if self.notifier is None or not self.notifier.channels:
            return
        if self.inline_notifications:
            await self.notifier.deliver(incident_id)
        else:
            self.notifier.dispatch(incident_id)


def _changes(before: Incident, after: Incident) -> dict[str, Any]:
    fields = ("severity", "title", "description", "affected_components", "suggested_actions")
    return {
        f: {"from": getattr(before, f), "to": getattr(after, f)}
        for f in fields
        if getattr(before, f) != getattr(after, f)
    }
