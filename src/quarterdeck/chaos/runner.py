"""Run one scenario end to end: deploy, load, break, mend, audit, tear down.

Each scenario gets a fresh deployment (temp data dir, its own embedded Postgres and Redis) so its
incidents, counters and runs are its own: two ``quarterdeck up`` replicas (the first becomes the
health-monitor leader) and one ``quarterdeck worker`` (monitor disabled, so leadership stays on a
replica with an API). Runs are submitted evenly over lead + fault + tail, so some are in flight
when the fault hits, some are submitted during it and some after it; the tail also drives the
half-open probes that close breakers again.

Figures: *detection* is the incident's ``opened_at`` (the monitor's first failed check) minus the
fault's start; *recovery* is its ``resolved_at`` minus the fault's end. A *permanent* fault (the
primary model dies for good, ``primary-down``) has no end: it is not healed while measured (the
fake provider is healed only in cleanup, before the next scenario's fresh deployment), the
incident must resolve while it still holds (the fallback serving, accepted as degraded), and its
recovery is ``resolved_at`` minus the fault's *start*, labelled ``incident (permanent fault: from
fault start)``. A scenario that opens no incident by design (a worker or leader SIGKILL, handled
by pgqueuer re-pick or leader election) reports detection ``n/a`` and a recovery measured from the
runs (last orphaned run re-picked) or from leadership (a new leader reports itself), labelled so
nobody mistakes one for the other.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quarterdeck.chaos.deploy import LocalDeployment
from quarterdeck.chaos.measure import (
    Audit,
    Submitter,
    audit,
    incidents,
    leader_of,
    metric,
    scrape,
    ts,
    wait_terminal,
)
from quarterdeck.chaos.messages_api import Conversation, MessagesAPIServer, Notification
from quarterdeck.chaos.scenarios import FALLBACK, PRIMARY, Scenario

FAST_ENV = {
    "QUARTERDECK_HEALTH_CHECK_INTERVAL": "1s",
    "QUARTERDECK_HEALTH_LEADER_RETRY": "1s",
    "QUARTERDECK_HEALTH_PROVIDER_WINDOW": "5s",
    "QUARTERDECK_BREAKER_OPEN_FOR": "5s",
    "QUARTERDECK_BREAKER_WINDOW": "10s",
    "QUARTERDECK_RETRY_SCHEDULE": "[0.2, 0.5, 1]",
    "QUARTERDECK_RETRY_MAX_ATTEMPTS": "100",
    "QUARTERDECK_RETRY_BUDGET": "90s",
    "QUARTERDECK_WORKER_HEARTBEAT_TIMEOUT": "4s",
    "QUARTERDECK_WORKER_DEQUEUE_TIMEOUT": "1s",
    "QUARTERDECK_WORKER_CONCURRENCY": "20",
    "QUARTERDECK_DB_POOL_MAX": "10",
}


@dataclass(frozen=True)
class Timing:
    """Seconds: load before the fault, the fault's hold, load after it, and how long to wait."""

    lead_s: float
    fault_s: float
    tail_s: float
    settle_s: float

    @classmethod
    def for_mode(cls, fast: bool) -> Timing:
        # Fast (the test suite): a short lead and tail around the same 10 s fault; the audit
        # waits for every run to end and the incident to resolve whatever the tail was.
        return cls(2, 10, 4, 60) if fast else cls(10, 60, 70, 300)


@dataclass
class Result:
    scenario: str
    title: str
    faults: list[str]
    submitted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    resumed: int = 0
    detection_s: float | None = None
    recovery_s: float | None = None
    recovery_basis: str = "n/a"
    incidents: list[dict[str, Any]] = field(default_factory=list)
    notifications: dict[str, dict[str, int]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.lost and not self.duplicated and all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["passed"] = self.passed
        return out


class Runner:
    """Owns the fake provider (shared by every scenario) and one deployment at a time."""

    def __init__(
        self,
        *,
        runs: int = 500,
        fast: bool = False,
        notifications: tuple[str, Callable[[], list[Notification]]] | None = None,
        keep: bool = False,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.runs, self.fast, self.keep, self.log = runs, fast, keep, log
        self.timing = Timing.for_mode(fast)
        self.provider = MessagesAPIServer(
            Conversation(turns=3, latency_s=0.2 if fast else 0.5),
            rate_limit_headers={},
            record_requests=False,
        ).start()
        self.webhook_url, self.received = notifications or (
            self.provider.webhook_url,
            self.provider.received,
        )
        self.deployment: LocalDeployment | None = None
        self.state: dict[str, object] = {}
        self._baseline = 0

    def close(self) -> None:
        self.provider.stop()

    # -- one scenario ----------------------------------------------------------------------------
    def run(self, scenario: Scenario) -> Result:
        started = time.time()
        result = Result(scenario.name, scenario.title, [])
        env = {
            "QUARTERDECK_PROVIDER": "anthropic",
            "ANTHROPIC_API_KEY": "sk-ant-chaos-not-a-real-key",
            "QUARTERDECK_ANTHROPIC_BASE_URL": self.provider.base_url,
            "QUARTERDECK_DEFAULT_MODEL": PRIMARY,
            "QUARTERDECK_PROVIDER_TIMEOUT": "30s",
            "QUARTERDECK_NOTIFY_WEBHOOK_URL": self.webhook_url,
            "QUARTERDECK_NOTIFY_WEBHOOK_SECRET": "chaos",
            **(FAST_ENV if self.fast else {}),
            **scenario.env,
        }
        self.provider.heal()
        self.state = {}
        self._baseline = len(self.received())
        dep = self.deployment = LocalDeployment(env)
        try:
            self._deploy(dep)
            self._drive(scenario, dep, result)
        finally:
            self.provider.heal()
            dep.close(keep=self.keep)
            self.deployment = None
        result.wall_s = round(time.time() - started, 1)
        return result

    def _deploy(self, dep: LocalDeployment) -> None:
        dep.start_redis()
        first = dep.start("up")
        dep.start("up", wait=False)
        dep.start("worker", wait=False, QUARTERDECK_HEALTH_MONITOR_ENABLED="false")
        for replica in dep.replicas[1:]:
            dep.wait_ready(replica)
        deadline = time.monotonic() + 30
        while leader_of([first.url]) is None and time.monotonic() < deadline:
            time.sleep(0.3)

    def _drive(self, scenario: Scenario, dep: LocalDeployment, result: Result) -> None:
        t = self.timing
        fault_s = t.fault_s if scenario.timed else 0.0

        def urls() -> list[str]:
            return [r.url for r in dep.api_replicas()]

        sub = Submitter(urls, self.runs, t.lead_s + fault_s + t.tail_s, uuid.uuid4().hex[:8])
        sub.start()
        time.sleep(t.lead_s)
        self.log(f"{scenario.name}: injecting fault")
        fault_start = time.time()
        result.faults += scenario.inject(self)  # type: ignore[arg-type]
        peak_breaker = 0.0
        while True:  # sample the primary's breaker while the fault holds (once for a kill)
            peak_breaker = max(peak_breaker, self._breaker_peak(dep))
            if time.time() - fault_start >= fault_s:
                break
            time.sleep(1.0)
        if scenario.permanent:  # nothing to heal: it holds until cleanup, after the audit
            result.faults.append("not healed while measured (permanent)")
        else:
            result.faults += scenario.heal(self)  # type: ignore[arg-type]
        fault_end = time.time()
        result.observed["primary_breaker_peak"] = int(peak_breaker)
        primary_500s = self.provider.answered[(PRIMARY, 500)]
        if scenario.name == "leader-kill":
            self._leader_recovery(dep, fault_end, result)
        sub.join()
        self.log(f"{scenario.name}: waiting for {len(sub.ids)} runs")
        runs = wait_terminal(urls, list(sub.ids.values()), t.settle_s + 120)
        found: Audit = audit(urls()[0], sub, runs)
        result.submitted, result.outcomes = found.submitted, dict(found.outcomes)
        result.lost, result.duplicated, result.resumed = found.lost, found.duplicated, found.resumed
        result.observed["submit_retries"] = sub.retries
        self._incidents(scenario, urls, fault_start, fault_end, result)
        if scenario.expect_incident is None and result.recovery_basis == "n/a":
            self._run_recovery(found, runs, fault_start, fault_end, scenario, result)
        if scenario.permanent:  # the primary kept failing (half-open probes) after the hold
            result.observed["primary_500s_after_hold"] = (
                self.provider.answered[(PRIMARY, 500)] - primary_500s
            )
        self._metrics(dep, found, scenario, result)

    def _breaker_peak(self, dep: LocalDeployment) -> float:
        return max(
            [
                metric(
                    scrape(r.metrics_url),
                    "claude_agent_circuit_state",
                    dependency=f"anthropic:{PRIMARY}",
                )
                for r in dep.replicas
                if r.alive
            ]
            or [0.0]
        )

    def _leader_recovery(self, dep: LocalDeployment, fault_end: float, result: Result) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if leader_of([r.url for r in dep.api_replicas()]) is not None:
                result.recovery_s = round(time.time() - fault_end, 2)
                result.recovery_basis = "new leader"
                result.checks["new leader elected"] = True
                return
            time.sleep(0.2)
        result.checks["new leader elected"] = False

    def _incidents(
        self,
        scenario: Scenario,
        urls: Callable[[], list[str]],
        fault_start: float,
        fault_end: float,
        result: Result,
    ) -> None:
        """Wait (up to settle_s) for the expected incident to resolve, then read the figures."""
        deadline = time.monotonic() + self.timing.settle_s
        items: list[dict[str, Any]] = []
        while True:
            # the incident may be recorded late (database) or resolve late (provider window)
            with contextlib.suppress(Exception):
                items = incidents(urls()[0])
            mine = [i for i in items if i["service"] == scenario.expect_incident]
            done = scenario.expect_incident is None or (
                mine and all(i["status"] == "resolved" for i in mine)
            )
            if done or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        self._settle_notifications(items)
        result.notifications = _notification_counts(self.received()[self._baseline :])
        result.incidents = [
            {
                k: i[k]
                for k in (
                    "id",
                    "service",
                    "severity",
                    "status",
                    "resolved_by",
                    "opened_at",
                    "resolved_at",
                    "resolution_note",
                )
            }
            for i in items
        ]
        if scenario.expect_incident is None:
            return
        mine = sorted(
            (i for i in items if i["service"] == scenario.expect_incident),
            key=lambda i: i["opened_at"],
        )
        result.checks[f"{scenario.expect_incident} incident opened"] = bool(mine)
        result.checks[f"{scenario.expect_incident} incident resolved"] = bool(mine) and all(
            i["status"] == "resolved" for i in mine
        )
        if mine:
            opened, resolved = ts(mine[0]["opened_at"]), ts(mine[-1]["resolved_at"])
            if opened is not None:
                result.detection_s = round(opened - fault_start, 2)
            if resolved is not None and scenario.permanent:  # no fault end to measure from
                result.recovery_s = round(resolved - fault_start, 2)
                result.recovery_basis = "incident (permanent fault: from fault start)"
            elif resolved is not None:
                result.recovery_s = round(resolved - fault_end, 2)
                result.recovery_basis = "incident"
            counts = result.notifications
            for inc in mine:
                got = counts.get(inc["id"], {})
                result.checks[f"{inc['id']} notified (trigger)"] = got.get("trigger", 0) == 1
                if inc["status"] == "resolved":
                    result.checks[f"{inc['id']} notified (resolve)"] = got.get("resolve", 0) == 1

    def _settle_notifications(self, items: list[dict[str, Any]]) -> None:
        """Give the outbox a few seconds to deliver the last resolve messages."""
        resolved = {i["id"] for i in items if i["status"] == "resolved"}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = {(n.incident_id, n.event) for n in self.received()}
            if all((i, "resolve") in got for i in resolved):
                return
            time.sleep(0.5)

    def _run_recovery(
        self,
        found: Audit,
        runs: dict[str, dict[str, Any]],
        fault_start: float,
        fault_end: float,
        scenario: Scenario,
        result: Result,
    ) -> None:
        """No incident by design: recovery = the last orphaned run picked up again."""
        repicked: list[float] = []
        for run_id, events in found.events.items():
            if runs[run_id]["attempts"] < 2:
                continue
            starts = [
                ts(e["ts"]) or 0.0
                for e in events
                if e["type"] == "status" and e["data"].get("status") == "running"
            ]
            after = [s for s in starts if s > fault_start]
            if after:
                repicked.append(min(after))
        if repicked:
            result.recovery_s = round(max(repicked) - fault_end, 2)
            result.recovery_basis = f"{len(repicked)} runs re-picked"

    def _metrics(
        self, dep: LocalDeployment, found: Audit, scenario: Scenario, result: Result
    ) -> None:
        """Counters agree with the runs; breakers are what the fault should have left them."""
        samples = [scrape(r.metrics_url) for r in dep.replicas if r.alive]
        counted = sum(
            metric(s, "claude_agent_run_outcomes_total", status="succeeded") for s in samples
        )
        succeeded = found.outcomes.get("succeeded", 0)
        result.observed["succeeded_counted_by_live_replicas"] = int(counted)
        killed = not all(r.alive for r in dep.replicas)
        # A SIGKILLed process takes its counters with it, so only an upper bound holds then.
        ok = counted <= succeeded if killed else counted == succeeded
        result.checks["outcome counters match runs"] = ok
        if scenario.name == "primary-down":
            result.checks["primary breaker opened (state 2)"] = (
                result.observed["primary_breaker_peak"] == 2
            )
            fallbacks = sum(metric(s, "claude_agent_model_fallbacks_total") for s in samples)
            result.observed["fallbacks_counted"] = int(fallbacks)
            result.checks["fallback served"] = fallbacks > 0
            notes = [
                i.get("resolution_note") or ""
                for i in result.incidents
                if i["service"] == "anthropic_api" and i["status"] == "resolved"
            ]
            result.checks["resolved as degraded: fallback serving"] = bool(notes) and all(
                f"fallback {FALLBACK} serving" in note for note in notes
            )
        dup = [
            f"{i}:{k}x{n}"
            for i, kinds in result.notifications.items()
            for k, n in kinds.items()
            if n > 1
        ]
        result.checks["no notification delivered twice"] = not dup


def _notification_counts(received: list[Notification]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for note in received:
        counts.setdefault(note.incident_id, Counter())[note.event] += 1
    return {k: dict(v) for k, v in counts.items()}


def dumps(results: list[Result]) -> str:
    return json.dumps([r.to_dict() for r in results], indent=2, default=str)
