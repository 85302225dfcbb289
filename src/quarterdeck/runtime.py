"""Builds and owns the long-lived pieces of one process: pool, migrations, hub, services, workers.

``quarterdeck up`` uses all of it; ``serve`` skips the worker pool; ``worker`` skips the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from quarterdeck import metrics
from quarterdeck.agents import sandbox
from quarterdeck.agents.claude_code.plan import ClaudeCodeDeps
from quarterdeck.agents.guard import Guard, hold_recorder
from quarterdeck.agents.planner import AgentPlanner
from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.approvals.service import ApprovalService
from quarterdeck.budgets.holds import BudgetHolds
from quarterdeck.budgets.service import BudgetService
from quarterdeck.config import Settings
from quarterdeck.gateway.reads import GatewayCalls
from quarterdeck.gateway.service import Gateway
from quarterdeck.gateway.wiring import start_gateway
from quarterdeck.health import HealthMonitor
from quarterdeck.health.electors import build_elector
from quarterdeck.health.leader import HEALTH_MONITOR_KEY, Elector
from quarterdeck.health.maintenance import MaintenanceService
from quarterdeck.incidents import IncidentService, build_incident_service
from quarterdeck.incidents.anomalies import AnomalySink
from quarterdeck.kit.wiring import Services
from quarterdeck.providers.factory import build_pricing, build_provider, configure_metric_labels
from quarterdeck.providers.pricing import Pricing
from quarterdeck.providers.types import Provider
from quarterdeck.reports.schedule import ReportScheduler
from quarterdeck.reports.service import ReportService
from quarterdeck.reports.wiring import build_reports
from quarterdeck.resilience import (
    Breakers,
    BucketStore,
)
from quarterdeck.resilience.calls import ResilientCaller
from quarterdeck.resilience.wiring import build_breakers, build_caller
from quarterdeck.rollouts.controller import RolloutController
from quarterdeck.rollouts.routing import CanaryRouter
from quarterdeck.rollouts.service import RolloutService
from quarterdeck.rollouts.wiring import build_rollouts
from quarterdeck.runs.events import RunEventHub
from quarterdeck.runs.executor import ExecutorConfig, RunExecutor
from quarterdeck.runs.gauges import mirror_gauges
from quarterdeck.runs.insights import RunInsights
from quarterdeck.runs.service import RunService
from quarterdeck.runs.store import PostgresRunStore
from quarterdeck.runs.worker import WorkerPool
from quarterdeck.scaling.emergency import emergency_requester
from quarterdeck.scaling.scaler import Scaler
from quarterdeck.scaling.service import ScalingService
from quarterdeck.scaling.wiring import build_scaling
from quarterdeck.security.audit import AuditLog
from quarterdeck.security.auth import AuthService, build_auth_service
from quarterdeck.security.auth.run_tokens import RunTokens
from quarterdeck.security.auth.sessions import SessionService
from quarterdeck.security.policy import PolicyGate
from quarterdeck.security.trail import AuditTrail
from quarterdeck.store import migrations
from quarterdeck.store.pool import Database
from quarterdeck.tenants.maintenance import Maintenance
from quarterdeck.tenants.service import TenantData
from quarterdeck.tenants.wiring import build_tenant_data
from quarterdeck.tracing.setup import TracingHandle, configure_tracing, instrument_asyncpg

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    with_workers: bool = True
    with_api: bool = True
    db: Database = field(init=False)
    hub: RunEventHub = field(init=False)
    runs: RunService = field(init=False)
    insights: RunInsights = field(init=False)
    run_store: PostgresRunStore = field(init=False)
    agent_catalog: AgentCatalog = field(init=False)
    incidents: IncidentService = field(init=False)
    budgets: BudgetService = field(init=False)
    approvals: ApprovalService = field(init=False)
    audit: AuditLog = field(init=False)
    trail: AuditTrail = field(init=False)
    anomalies: AnomalySink = field(init=False)
    auth: AuthService = field(init=False)
    sessions: SessionService = field(init=False)
    leader: Elector | None = field(init=False, default=None)
    health: HealthMonitor | None = field(init=False, default=None)
    provider: Provider | None = field(init=False, default=None)
    workers: WorkerPool | None = field(init=False, default=None)
    draining: bool = field(init=False, default=False)
    migrated: bool = field(init=False, default=False)
    breakers: Breakers | None = field(init=False, default=None)
    gateway: Gateway | None = field(init=False, default=None)
    holds: BudgetHolds = field(init=False)
    pricing: Pricing = field(init=False)
    _bucket_store: BucketStore | None = field(init=False, default=None)
    gateway_calls: GatewayCalls = field(init=False)
    tenant_data: TenantData = field(init=False)
    maintenance: Maintenance | None = field(init=False, default=None)
    scaling: ScalingService = field(init=False)
    reports: ReportService = field(init=False)
    report_scheduler: ReportScheduler | None = field(init=False, default=None)
    scaler: Scaler | None = field(init=False, default=None)
    rollouts: RolloutService = field(init=False)
    rollout_controller: RolloutController | None = field(init=False, default=None)
    tracing: TracingHandle | None = field(init=False, default=None)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _closers: list[Callable[[], Awaitable[None]]] = field(init=False, default_factory=list)

    async def start(self) -> None:
        # Agent commands run only where the sandbox holds: decide (or refuse) before anything.
        await asyncio.to_thread(
            sandbox.check_startup,
            sandbox.SandboxConfig(
                mode=self.settings.sandbox_mode,
                workspace_bytes=self.settings.workspace_max_bytes,
                tmp_bytes=self.settings.sandbox_tmp_limit,
                allow_weak=self.settings.sandbox_allow_weak,
            ),
            self.with_workers and self.settings.env == "production",
        )
        # Prices first: a fallback model missing from the table is a config error, found early.
        self.pricing = build_pricing(self.settings)
        configure_metric_labels(self.settings, self.pricing)
        # Tracing (off unless OTEL_* asks): asyncpg's classes patched before any connection.
        roles = [r for r, on in (("api", self.with_api), ("worker", self.with_workers)) if on]
        self.tracing = configure_tracing(
            service_name="quarterdeck",
            service_version=_version(),
            role="+".join(roles),
            record_content=self.settings.trace_content,
        )
        instrument_asyncpg()
        self.db = Database.from_settings(self.settings)
        await migrations.upgrade(self.db.url)
        self.migrated = True
        await self.db.open()
        self.hub = RunEventHub(self.db.url)
        if self.with_api:
            await self.hub.start()
        self.agent_catalog = AgentCatalog.from_settings(
            self.settings, need_sandbox=self.with_workers
        )
        # The audit trail first: the run service and the workers take it at construction.
        self.audit = AuditLog.from_settings(self.settings, self.db)
        await self.audit.start()
        self.trail = AuditTrail(self.audit)
        self.run_store = PostgresRunStore(self.db)
        # Agent-configuration canaries route a share of new runs (read every 2 s per process).
        self.canary_routes = CanaryRouter(self.db)
        self.runs = RunService(
            self.settings,
            self.run_store,
            self.hub if self.with_api else None,
            self.agent_catalog,
            trail=self.trail,
            routes=self.canary_routes,
        )
        self.insights = RunInsights(self.db, stale_after_s=self.settings.worker_heartbeat_timeout)
        self.incidents = build_incident_service(self.settings, self.db)
        self._tasks.append(asyncio.create_task(self.incidents.run_forever(15.0)))
        self.holds = BudgetHolds(
            self.db,
            ttl_s=self.settings.gateway_hold_ttl,
            timeout_s=self.settings.gateway_budget_timeout,
            fail_open=self.settings.gateway_budget_fail_open,
        )
        self.budgets = BudgetService(self.db, on_change=self.holds.forget)
        self.approvals = ApprovalService(self.db, timeout_s=self.settings.policy_approval_timeout)
        self.anomalies = AnomalySink(self.incidents)
        self.auth = build_auth_service(
            self.settings,
            self.db,
            on_change=self.trail.key_changed,
            warn_if_disabled=self.with_api,
        )
        if self.settings.auth_required:  # keys an anonymous caller made while it was off
            await self.auth.retire_keys_made_while_auth_off()
        self._closers.append(self.auth.aclose)
        secure = self.settings.ui_secure_cookies
        self.sessions = SessionService(
            self.db,
            self.auth,
            lifetime=timedelta(seconds=self.settings.ui_session_lifetime),
            secure_cookies=self.settings.env == "production" if secure is None else secure,
        )
        self.tenant_data, self.maintenance = build_tenant_data(
            self.settings,
            self.db,
            self.run_store,
            self.audit,
            auth=self.auth,
            incidents=self.incidents,
        )
        if self.maintenance is not None:
            self._tasks.append(asyncio.create_task(self.maintenance.run()))
        self.breakers = self._build_breakers()
        gate = PolicyGate.from_settings(self.settings)
        self.gateway_calls = GatewayCalls(self.db)
        if self.with_api and self.settings.gateway_enabled:
            self.gateway, closers = await start_gateway(
                self.settings,
                self.db,
                pricing=self.pricing,
                holds=self.holds,
                gate=gate,
                trail=self.trail,
                anomalies=self.anomalies,
                breakers=self.breakers,
            )
            self._closers.extend(closers)
        metrics.BUILD_INFO.labels(version=_version(), provider=self.settings.provider_name).set(1)
        self._tasks.append(
            asyncio.create_task(
                mirror_gauges(
                    self.run_store, self.budgets, self.holds, self.settings.default_agent_type
                )
            )
        )
        if self.with_workers:
            self.provider = build_provider(self.settings)
            config = ExecutorConfig(
                max_turns=self.settings.max_turns, timeout_s=self.settings.run_timeout
            )
            cost_of = self.pricing.cost
            executor = RunExecutor(
                self.run_store,
                self.provider,
                AgentPlanner(
                    self.settings,
                    self.run_store,
                    self.agent_catalog,
                    simulated=self.provider.name == "simulated",
                    guard=Guard(
                        gate,
                        approvals=self.approvals,
                        anomalies=self.anomalies,
                        trail=self.trail,
                        on_hold=hold_recorder(self.run_store),
                    ),
                    claude_code=ClaudeCodeDeps(RunTokens(self.db), self.gateway_calls),
                ),
                cost_of,
                config,
                self._build_caller(self.provider, self.pricing),
                holds=self.holds,
            )
            metrics.zero_outcomes(self.agent_catalog.names)  # every outcome counted from its first
            self.workers = WorkerPool(
                self.settings,
                self.run_store,
                executor,
                database_url=self.db.url,
                trail=self.trail,
            )
            self._tasks.append(asyncio.create_task(self.workers.run()))
        # The scaler: its status (every process) and its loop (mode != off; own election);
        # built before the health monitor, whose emergency scale-up goes through it.
        self.scaling, self.scaler = build_scaling(
            self.settings, self.db, self.run_store, self.breakers
        )
        if self.scaler is not None:
            self._tasks.append(asyncio.create_task(self.scaler.run()))
        if self.settings.health_monitor_enabled:
            self.leader = self._build_elector()
            self.health = HealthMonitor(
                self.settings,
                self.db,
                self.incidents,
                self.breakers,
                elector=self.leader,
                interval_s=self.settings.health_check_interval,
                scaler=emergency_requester(self.scaler),  # its emergency scale-up, for real
            )
            self._tasks.append(asyncio.create_task(self.leader.run()))
            self._tasks.append(asyncio.create_task(self.health.run()))
            self._closers.append(self.health.aclose)
        # Rollouts: the service (every process) and the controller (enabled; own election).
        self.rollouts, self.rollout_controller = build_rollouts(
            self.settings,
            self.db,
            self.incidents,
            catalog=self.agent_catalog,
            router=self.canary_routes,
        )
        if self.rollout_controller is not None:
            self._tasks.append(asyncio.create_task(self.rollout_controller.run()))
        # Monthly reports: served by every process; last month's stored on the 1st by the leader
        # of the API processes (a worker-only process does not hold a connection for it).
        self.reports, scheduler = build_reports(self.settings, self.db)
        if self.with_api:
            self.report_scheduler = scheduler
            self._tasks.append(asyncio.create_task(scheduler.run()))
        metrics.READY.set(1)

    def _build_elector(self) -> Elector:
        """The health monitor's leader election: a Postgres advisory lock or a Kubernetes Lease."""
        return build_elector(
            self.settings,
            self.db.url,
            key=HEALTH_MONITOR_KEY,
            lease="quarterdeck-health-monitor",
            role="health_monitor",
        )

    def _build_breakers(self) -> Breakers:
        """Circuit breakers, shared through Redis when REDIS_URL is set, for the workers' calls
        and the gateway's alike."""
        breakers, self._bucket_store, close = build_breakers(self.settings)
        if close is not None:
            self._closers.append(close)
        return breakers

    def _build_caller(self, provider: Provider, pricing: Pricing) -> ResilientCaller:
        assert self.breakers is not None  # built in start() before any caller
        return build_caller(self.settings, provider, pricing, self.breakers, self._bucket_store)

    async def drain(self) -> None:
        """Turn /ready to 503 and stop new pickups; in-flight runs finish or are released."""
        self.draining = True
        metrics.READY.set(0)
        if self.workers is not None:
            await self.workers.drain(self.settings.drain_timeout)

    async def stop(self) -> None:
        if not self.draining:
            await self.drain()
        if self.leader is not None:
            # Before the cancel below: on Python 3.11 ``asyncio.wait_for`` can swallow a
            # cancellation that lands as its inner call completes (the lock query, say), and the
            # elector's loop then only ends when told to stop. Awaiting it would hang for ever.
            with contextlib.suppress(Exception):
                await self.leader.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a loop that swallowed its cancellation must not hang stop()
            done, pending = await asyncio.wait(self._tasks, timeout=10.0)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: failures were logged by the loops themselves
            for task in pending:
                log.error("runtime.task_did_not_stop", task=task.get_name())
        if self.with_api:
            await self.hub.stop()
        if self.provider is not None:
            await self.provider.aclose()
        with contextlib.suppress(Exception):
            await self.incidents.aclose()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        with contextlib.suppress(Exception):  # last: everything above may still have audited
            await self.audit.aclose()
        await self.db.close()
        metrics.configure_labels(None)  # this process's label bounds go with its runtime
        if self.tracing is not None:  # last: the spans of everything above, bounded
            await asyncio.to_thread(self.tracing.shutdown)

    def register(self, registry: Services) -> None:
        """Offer the started services to the API routes, each under the type routes ask for."""
        registry.add(RunService, self.runs)
        registry.add(RunInsights, self.insights)
        registry.add(AgentCatalog, self.agent_catalog)
        registry.add(IncidentService, self.incidents)
        registry.add(BudgetService, self.budgets)
        registry.add(ApprovalService, self.approvals)
        registry.add(AuditLog, self.audit)
        registry.add(AuditTrail, self.trail)
        registry.add(AuthService, self.auth)
        registry.add(SessionService, self.sessions)
        registry.add(GatewayCalls, self.gateway_calls)
        registry.add(TenantData, self.tenant_data)
        registry.add(ScalingService, self.scaling)
        registry.add(ReportService, self.reports)
        registry.add(MaintenanceService, MaintenanceService(self.db))
        registry.add(RolloutService, self.rollouts)
        if self.health is not None:
            registry.add(HealthMonitor, self.health)
        if self.gateway is not None:
            registry.add(Gateway, self.gateway)


def _version() -> str:
    from quarterdeck import __version__

    return __version__
