"""Every Prometheus metric Quarterdeck exports, in one registry.

The first eight are the guide's, with its exact names, label names and buckets. Label values are
bounded by construction: agent types come from config, statuses and severities from enums; never
a run id or free text (see :func:`bounded`). The three that callers choose (``operation``,
``model``, ``project``) go through :func:`operation`, :func:`model` and :func:`project`, which
keep only configured values (and the price table's models) and make the rest ``other``.

Counters are incremented only by the process that did the work, so summing a counter across
scrape targets (replicas, or ``worker`` processes beside ``serve``) counts each run once. Gauges
read from Postgres (queue length, runs by state) are the same in every process; aggregate them
with ``max`` rather than ``sum``.

Tenant names are kept in the ``tenant`` label as they are; what leaves the process is decided
where metrics are served (:class:`~quarterdeck.metrics_tenants.TenantPseudonyms`, re-exported here,
unless ``QUARTERDECK_METRICS_TENANT_LABELS``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector

# Re-exported: what a scrape shows of the ``tenant`` label is decided in metrics_tenants.
from quarterdeck.metrics_tenants import NOT_TENANTS as NOT_TENANTS
from quarterdeck.metrics_tenants import TENANT_LABEL as TENANT_LABEL
from quarterdeck.metrics_tenants import TenantPseudonyms as TenantPseudonyms
from quarterdeck.metrics_tenants import tenant_pseudonym as tenant_pseudonym

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# --- the guide's eight -------------------------------------------------------------------------
REQUESTS = Counter(
    "claude_agent_requests_total",
    "Total number of agent requests (finished runs), by outcome: success, error or cancelled",
    ["agent_type", "status", "operation"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "claude_agent_request_duration_seconds",
    "Duration of agent requests in seconds, from start of execution to a terminal state",
    ["agent_type", "operation"],
    buckets=[0.1, 0.5, 1, 2, 5, 10, 30, 60],
    registry=REGISTRY,
)
ACTIVE = Gauge(
    "claude_agent_active_count",
    "Number of agent runs currently executing in this process",
    ["agent_type"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "claude_agent_tokens_used_total",
    "Total tokens consumed by agents (input, output, cache writes and cache reads)",
    ["agent_type", "model"],
    registry=REGISTRY,
)
COST = Counter(
    "claude_agent_api_cost_total",
    "Total API cost in USD (a model without a price is counted at the fallback model's price)",
    ["agent_type", "model"],
    registry=REGISTRY,
)
CODE_QUALITY = Histogram(
    "claude_agent_code_quality_score",
    "Code quality score from static analysis, in [0, 1]",
    ["agent_type", "language"],
    buckets=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    registry=REGISTRY,
)
TEST_COVERAGE = Histogram(
    "claude_agent_test_coverage_percent",
    "Test coverage percentage for generated code",
    ["agent_type", "project"],
    buckets=[10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
    registry=REGISTRY,
)
ERRORS = Counter(
    "claude_agent_errors_total",
    "Total number of agent errors",
    ["agent_type", "error_type", "severity"],
    registry=REGISTRY,
)

# --- queue and run state (read from Postgres) -------------------------------------------------
QUEUE_LENGTH = Gauge(
    "claude_agent_queue_length",
    "Runs waiting to start, from Postgres (same in every process: aggregate with max)",
    ["agent_type"],
    registry=REGISTRY,
)
QUEUE_OLDEST_AGE = Gauge(
    "claude_agent_queue_oldest_age_seconds",
    "Age of the oldest queued run, from Postgres (aggregate with max)",
    registry=REGISTRY,
)
RUNS_IN_STATE = Gauge(
    "claude_agent_runs_in_state",
    "Runs currently in each status, from Postgres (aggregate with max)",
    ["status"],
    registry=REGISTRY,
)
RUN_OUTCOMES = Counter(
    "claude_agent_run_outcomes_total",
    "Runs that reached a terminal status, by that status",
    ["agent_type", "status"],
    registry=REGISTRY,
)
RUN_ATTEMPTS = Counter(
    "claude_agent_run_attempts_total",
    "Executions started, including resumptions after a lost worker",
    ["agent_type", "kind"],
    registry=REGISTRY,
)
SUBMIT_TO_START = Histogram(
    "claude_agent_submit_to_start_seconds",
    "Time from submission to the first start of a run",
    ["agent_type"],
    buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registry=REGISTRY,
)
POLICY_DECISIONS = Counter(
    "claude_agent_policy_decisions_total",
    "Policy gate decisions on tool calls, by action and deciding rule",
    ["action", "rule"],
    registry=REGISTRY,
)

TURNS = Counter(
    "claude_agent_turns_total",
    "Completed (checkpointed) agent turns",
    ["agent_type", "model"],
    registry=REGISTRY,
)

# --- providers ---------------------------------------------------------------------------------
PROVIDER_LATENCY = Histogram(
    "claude_agent_provider_request_duration_seconds",
    "Latency of one model provider call",
    ["provider", "model"],
    buckets=[0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
    registry=REGISTRY,
)
PROVIDER_TTFT = Histogram(
    "claude_agent_provider_time_to_first_token_seconds",
    "Time to first streamed token of a model provider call",
    ["provider", "model"],
    buckets=[0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
    registry=REGISTRY,
)
UNPRICED_TOKENS = Counter(
    "claude_agent_unpriced_tokens_total",
    "Tokens used on models with no price of their own (their cost is the fallback's estimate)",
    ["agent_type", "model"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "claude_agent_model_fallbacks_total",
    "Calls served by a fallback model instead of the requested one",
    ["from_model", "to_model", "reason"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "claude_agent_provider_retries_total",
    "Provider call retries, by the error that caused them",
    ["provider", "error_type"],
    registry=REGISTRY,
)

# --- resilience, incidents, budgets, audit ----------------------------------------------------
CIRCUIT_STATE = Gauge(
    "claude_agent_circuit_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    ["dependency"],
    registry=REGISTRY,
)
BUDGET_REMAINING = Gauge(
    "claude_agent_budget_remaining_usd",
    "Tenant budget remaining in USD",
    ["tenant", "period"],
    registry=REGISTRY,
)
BUDGET_LIMIT = Gauge(
    "claude_agent_budget_limit_usd",
    "Tenant budget limit in USD",
    ["tenant", "period"],
    registry=REGISTRY,
)
INCIDENTS_OPEN = Gauge(
    "claude_agent_incidents_open",
    "Open (unresolved) incidents",
    ["severity"],
    registry=REGISTRY,
)
INCIDENT_OLDEST_OPEN_AGE = Gauge(
    "claude_agent_incident_oldest_open_age_seconds",
    "Age of the oldest unresolved incident, 0 when none is open",
    registry=REGISTRY,
)
MTTR = Gauge(
    "claude_agent_mttr_seconds",
    "Mean time to recover over incidents resolved in the last 30 days",
    registry=REGISTRY,
)
NOTIFICATIONS_SILENCED = Counter(
    "claude_agent_notifications_silenced_total",
    "Incident notifications a maintenance window held, released when it ended, or suppressed "
    "(the incident opened and resolved inside it)",
    ["outcome"],
    registry=REGISTRY,
)
AUDIT_CHAIN_VALID = Gauge(
    "claude_agent_audit_chain_valid",
    "1 when the last audit-chain verification passed, 0 when it found tampering",
    ["tenant"],
    registry=REGISTRY,
)
AUDIT_LAST_VERIFY = Gauge(
    "claude_agent_audit_last_verify_timestamp_seconds",
    "Unix time of the last audit-chain verification",
    registry=REGISTRY,
)
READY = Gauge(
    "claude_agent_ready",
    "1 when this process reports ready, 0 when not ready or draining",
    registry=REGISTRY,
)
DEPENDENCY_UP = Gauge(
    "claude_agent_dependency_up",
    "1 when this process reached the shared dependency (database, redis) at its last /ready "
    "probe, 0 when not; a pod stays ready while one is down",
    ["dependency"],
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "claude_agent_build_info",
    "Build information; always 1",
    ["version", "provider"],
    registry=REGISTRY,
)

_SAFE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
LABEL_VALUE = _SAFE
"""What a label value may look like (settings that list label values are checked with it)."""
OTHER = "other"


def bounded(value: str, allowed: frozenset[str] | set[str] | None = None) -> str:
    """A label value that cannot blow up cardinality: known values pass, anything else is 'other'."""
    if allowed is not None:
        return value if value in allowed else OTHER
    return value if _SAFE.match(value) else OTHER


# --- label values that come from users: operation, model, project -----------------------------
DEFAULT_OPERATIONS = ("task", "run", "review", "fix", "refactor", "test", "docs")
"""The ``operation`` values kept when none are configured (``QUARTERDECK_METRIC_OPERATIONS``):
``task`` is a run's default operation, the rest the usual kinds of coding-agent work."""
BUILTIN_PROJECTS = frozenset({"workspace", "upload"})
"""``project`` values that name no project (an empty workspace, an uploaded tar): always kept."""
UNCONFIGURED_MODELS = 100
"""Before :func:`configure_labels` (unit tests, tools), the first this many well-formed model
names are kept and the rest are ``other``, so even then the label is bounded."""
_MEMO_CAP = 4096


class LabelBounds:
    """The allowed values of each user-given label kind; everything else is ``other``.

    Set once at startup (:func:`configure_labels`, from settings and the price table), so the
    number of series of every metric is bounded by configuration, not by what callers send.
    """

    def __init__(
        self,
        operations: Iterable[str] = DEFAULT_OPERATIONS,
        projects: Iterable[str] = (),
        models: Iterable[str] | None = None,
        resolve_model: Callable[[str], str | None] | None = None,
    ) -> None:
        self.operations = frozenset(operations)
        self.projects = frozenset(projects) | BUILTIN_PROJECTS
        self.models = None if models is None else frozenset(models)
        self.resolve_model = resolve_model
        self._model_memo: dict[str, str] = {}
        self._first_come = 0

    def operation(self, value: str) -> str:
        return value if value in self.operations else OTHER

    def project(self, value: str) -> str:
        return value if value in self.projects else OTHER

    def model(self, value: str) -> str:
        found = self._model_memo.get(value)
        if found is not None:
            return found
        if self.models is None:  # unconfigured: well-formed names, first come, capped
            keep = _SAFE.match(value) is not None and self._first_come < UNCONFIGURED_MODELS
            self._first_come += keep
            found = value if keep else OTHER
        elif value in self.models:
            found = value
        else:
            # A dated or vendor-spelled id of a priced model counts as its table row: the id
            # itself could carry any date, which would be a new series per spelling.
            row = self.resolve_model(value) if self.resolve_model is not None else None
            found = row if row is not None and row in self.models else OTHER
        if len(self._model_memo) >= _MEMO_CAP:
            if self.models is None:
                return found  # keep the first-come set; just stop remembering
            self._model_memo.clear()
        self._model_memo[value] = found
        return found


_LABELS = LabelBounds()


def configure_labels(bounds: LabelBounds | None = None) -> None:
    """Set the allowed label values for this process (None: back to the unconfigured defaults).

    ``runtime.py`` calls it at start with the configured sets and the price table's models."""
    global _LABELS
    _LABELS = bounds if bounds is not None else LabelBounds()


def operation(value: str) -> str:
    """The ``operation`` label for a run's operation: a configured one, else ``other``."""
    return _LABELS.operation(value)


def model(value: str) -> str:
    """The ``model`` label: a priced model (its table row), a configured one, else ``other``."""
    return _LABELS.model(value)


def dependency(name: str) -> str:
    """The ``dependency`` label of a circuit breaker: ``provider:model`` breakers get the
    model's label (:func:`model`), so every unknown model shares ``provider:other``."""
    provider, sep, rest = name.partition(":")
    if not sep:
        return bounded(name)
    return f"{bounded(provider)}:{model(rest)}"


def project(value: str) -> str:
    """The ``project`` label: a configured project, ``workspace``/``upload``, else ``other``."""
    return _LABELS.project(value)


_CHILDREN: dict[tuple[object, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*map(bounded, values))``, remembered.

    Every run touches a dozen labelled series, and ``labels()`` validates and locks on each
    call; the children of a metric stay valid as long as nobody clears or removes its series,
    so use this only for metrics that never are (counters and histograms of runs and calls).
    """
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        if len(_CHILDREN) > 10_000:  # label values come from users: bound the memory too
            _CHILDREN.clear()
        found = _CHILDREN[key] = metric.labels(*(bounded(v) for v in values))
    return found


def zero_outcomes(agent_types: Iterable[str]) -> None:
    """Create every ``claude_agent_requests_total`` series a worker can count, at 0.

    Why: a labelled child appears on its first increment, and Prometheus' ``increase()`` and
    ``rate()`` cannot count a series' first value, so the first error of a version (a canary, a
    worker after a restart) would be invisible to the rollout analysis and the error-rate alert
    until its second. Created at start, every later increment is counted. Bounded: agent types
    and operations come from configuration, statuses are three.
    """
    for agent in agent_types:
        for op in sorted(_LABELS.operations | {OTHER}):
            for status in ("success", "error", "cancelled"):
                child(REQUESTS, agent, status, op)


def render() -> bytes:
    return generate_latest(REGISTRY)
