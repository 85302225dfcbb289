"""The worker pool: pgqueuer dequeues run jobs and this module executes them.

Three measured pgqueuer traps shape it:
- a plain worker exits when Postgres restarts, so it runs under ``pgqueuer.run`` with
  ``restart_on_failure=True`` and a factory that opens a fresh connection each time;
- cancellation reaches only code inside ``with ctx.cancellation:``, so the whole run executes there;
- stale jobs are re-picked only at dequeue, so dequeue and heartbeat timeouts are short (5 s and
  10 s by default), which bounds recovery after a SIGKILLed worker to well under 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import structlog
from opentelemetry.trace import Span

from quarterdeck import metrics
from quarterdeck.config import Settings
from quarterdeck.exceptions import Fenced, StoreError, Unavailable
from quarterdeck.kit.ids import ulid
from quarterdeck.runs import queue
from quarterdeck.runs.executor import Outcome, RunExecutor
from quarterdeck.runs.models import Run, RunStatus
from quarterdeck.runs.store_protocol import Finish, Requeue, RunStore
from quarterdeck.security.trail import AuditTrail
from quarterdeck.store.pool import connect_once
from quarterdeck.tracing import invoke_agent_span, record_error

log = structlog.get_logger(__name__)


@dataclass
class InFlight:
    run: Run
    scope: Any  # anyio.CancelScope from the pgqueuer job context
    release: bool = False
    fenced: bool = False  # its attempt lost the run: stop, record nothing
    started: float = field(default_factory=time.monotonic)


RELEASED = "released by a draining worker"


def after_claim(run: Run, accepting: bool) -> Literal["give_up", "release", "execute"]:
    """What to do with a freshly claimed run: a run past its attempts is given up (its worker
    was lost or released it each time), a draining worker hands it straight back."""
    if run.attempts > run.max_attempts:
        return "give_up"
    return "execute" if accepting else "release"


def gave_up(run: Run) -> Outcome:
    return Outcome(
        RunStatus.failed,
        error=f"gave up after {run.max_attempts} attempts: the worker executing this run "
        "was lost or released it each time",
        error_type="max_attempts",
    )


def traced_outcome(span: Span, settled: Outcome | None, *, fenced: bool = False) -> None:
    """How the attempt ended, on its ``invoke_agent`` span: the run's status, or ``released``
    (a draining worker handed it back) or ``fenced`` (another attempt holds the run); an error
    for anything but success or a release."""
    if not span.is_recording():
        return
    if fenced:
        span.set_attribute("quarterdeck.run.status", "fenced")
        record_error(span, "fenced", "another attempt holds the run")
        return
    if settled is None:
        span.set_attribute("quarterdeck.run.status", "released")
        return
    status = settled.status.value
    span.set_attribute("quarterdeck.run.status", status)
    if settled.status is not RunStatus.succeeded:
        record_error(span, settled.error_type or status, settled.error or "")


def settle(outcome: Outcome | None, release: bool) -> Outcome | None:
    """The outcome to record once execution stopped; None means release the run instead.

    No outcome means the cancel scope fired: a drain (``release``) hands the run back to the
    queue to resume elsewhere, anything else was a cancel request.
    """
    if outcome is not None:
        return outcome
    if release:
        return None
    return Outcome(RunStatus.cancelled, error="cancelled by request")


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        executor: RunExecutor,
        *,
        database_url: str,
        trail: AuditTrail | None = None,
    ) -> None:
        """``database_url``: where pgqueuer's own connection goes (it needs a dedicated one)."""
        self.settings = settings
        self.store = store
        self.executor = executor
        self.database_url = database_url
        self.trail = trail
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{ulid()[-6:]}"
        self.inflight: dict[str, InFlight] = {}
        self._stop = asyncio.Event()
        self._accepting = True
        self.repair_interval = 15.0
        self.provider_name = getattr(executor.provider, "name", "") or "unknown"

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Process jobs until :meth:`drain` finishes. Survives database restarts."""
        import pgqueuer

        concurrency = max(2, self.settings.worker_concurrency)
        batch = max(1, min(self.settings.worker_batch_size, concurrency // 2))
        background = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._repair_loop()),
        ]
        try:
            await pgqueuer.run(
                self._factory,
                dequeue_timeout=timedelta(seconds=self.settings.worker_dequeue_timeout),
                heartbeat_timeout=timedelta(seconds=self.settings.worker_heartbeat_timeout),
                batch_size=batch,
                max_concurrent_tasks=concurrency,
                restart_on_failure=True,
                restart_delay=timedelta(seconds=1),
                shutdown=self._stop,
            )
        finally:
            await self.store.aclose()
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @contextlib.asynccontextmanager
    async def _factory(self) -> AsyncIterator[Any]:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.models import Context, Job
        from pgqueuer.qm import QueueManager
        from pgqueuer.queries import Queries

        conn = await connect_once(self.database_url)
        try:
            qm = QueueManager(Queries(AsyncpgDriver(conn)))
            # pgqueuer drops wake-ups that arrive while it dispatches a batch and re-polls after
            # this interval (default 100 ms), which set the p99 of submit-to-start. Shorter costs
            # a few cheap polls per second while the pool is saturated.
            qm.min_dequeue_poll_interval = timedelta(seconds=self.settings.worker_poll_interval)

            @qm.entrypoint(queue.ENTRYPOINT, accepts_context=True)
            async def _run_job(job: Job, ctx: Context) -> None:
                await self.handle(job.payload.decode() if job.payload else "", ctx)

            yield qm
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def drain(self, grace: float) -> None:
        """Stop picking up runs; let in-flight ones finish for ``grace`` s, then release them."""
        self._accepting = False
        self._stop.set()
        deadline = time.monotonic() + grace
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for item in list(self.inflight.values()):
            item.release = True
            item.scope.cancel()
        while self.inflight:
            await asyncio.sleep(0.05)

    async def _heartbeat_loop(self) -> None:
        """Mark in-flight runs alive, so the health monitor can tell a stuck run from a slow one.

        Only the attempt holding a run counts: a run this worker lost while it was stalled is
        reported back and marked. Its execution is not cancelled here: it stops at its next
        write or model call (``Fenced``), so a call that was in flight when the run was lost
        still leaves its ``discarded_call`` event."""
        interval = min(5.0, self.settings.worker_heartbeat_timeout)
        while True:
            await asyncio.sleep(interval)
            if not self.inflight:
                continue
            items = list(self.inflight.values())
            try:
                lost = await self.store.heartbeat(
                    [i.run.id for i in items], epochs=[i.run.attempts for i in items]
                )
            except Exception:
                continue
            for run_id in lost:
                item = self.inflight.get(run_id)
                if item is not None and not item.fenced:
                    item.fenced = True
                    log.warning("run.heartbeat_lost", run_id=run_id, attempt=item.run.attempts)

    async def _repair_loop(self) -> None:
        """Safety net: requeue runs whose job vanished (e.g. a failure while Postgres restarted)."""
        while True:
            await asyncio.sleep(self.repair_interval)
            try:
                stale = 3 * self.settings.worker_heartbeat_timeout
                repaired = await self.store.requeue_orphans(stale)
                if repaired:
                    log.warning("orphaned_runs_requeued", runs=repaired)
            except Exception as exc:
                log.warning("orphan_repair_failed", error=str(exc))

    # -- one job ------------------------------------------------------------------------------
    async def handle(self, run_id: str, ctx: Any) -> None:
        """Execute one run job. A database outage requeues the job instead of losing the run."""
        from pgqueuer.errors import RetryRequested

        try:
            await self._handle(run_id, ctx)
        except (Unavailable, StoreError) as exc:
            log.warning("run_deferred", run_id=run_id, error=exc.detail)
            raise RetryRequested(delay=timedelta(seconds=2), reason=exc.detail) from exc

    async def _handle(self, run_id: str, ctx: Any) -> None:
        claimed = await self.store.claim(run_id, self.worker_id)
        if claimed is None:
            return  # already terminal: a stale or duplicate job
        run, first = claimed
        if self.trail is not None:
            self.trail.run_started(run, self.worker_id)
        agent = run.agent_type
        metrics.child(metrics.RUN_ATTEMPTS, agent, "first" if first else "resume").inc()
        if first:
            metrics.child(metrics.SUBMIT_TO_START, agent).observe(
                max(
                    0.0, (run.started_at or run.created_at).timestamp() - run.created_at.timestamp()
                )
            )
        decision = after_claim(run, self._accepting)
        if decision == "give_up":
            await self._finish(run, gave_up(run))
            return
        if decision == "release":
            await self._release(run)
            return
        item = InFlight(run=run, scope=ctx.cancellation)
        self.inflight[run.id] = item
        metrics.child(metrics.ACTIVE, agent).inc()
        # One span per attempt, under the context stored at submission: a resumed attempt, on
        # any worker, lands in the same trace. Current while the agent runs, so its model calls
        # and tool calls are its children.
        with self._attempt_span(run) as span:
            outcome: Outcome | None = None
            try:
                with ctx.cancellation:
                    outcome = await self.executor.execute(run)
            except Fenced:
                item.fenced = True
            except (Unavailable, StoreError) as exc:
                record_error(span, "unavailable", exc.detail)
                raise
            except Exception as exc:  # a bug: fail this run loudly rather than retry it forever
                log.exception("run_crashed", run_id=run.id)
                outcome = Outcome(
                    RunStatus.failed, error=f"internal error: {exc}", error_type="internal"
                )
            finally:
                metrics.child(metrics.ACTIVE, agent).dec()
                self.inflight.pop(run.id, None)
            settled = None if item.fenced else settle(outcome, item.release)
            traced_outcome(span, settled, fenced=item.fenced)
            if item.fenced:
                self._fenced(run)
                return
            if settled is None:
                await self._release(run)
                return
            await self._finish(run, settled)

    def _attempt_span(self, run: Run) -> AbstractContextManager[Span]:
        stored = run.params.get("trace")
        return invoke_agent_span(
            run.agent_type,
            run_id=run.id,
            tenant=run.tenant,
            provider=self.provider_name,
            model=run.model,
            attempt=run.attempts,
            parent=stored if isinstance(stored, Mapping) else None,
            config_version=run.config_version,
        )

    async def _release(self, run: Run) -> None:
        """Hand the run back to the queue under a new job; it resumes from its checkpoint."""
        await self.store.requeue(
            [Requeue(run.id, RELEASED, {"worker": self.worker_id}, epoch=run.attempts)],
            expect=frozenset({RunStatus.running}),
        )
        log.info("run_released", run_id=run.id)

    def _fenced(self, run: Run) -> None:
        """This attempt lost the run to another (its job was picked up again while this worker
        stalled): neither finish nor requeue it; the holder does."""
        log.warning("run.fenced", run_id=run.id, attempt=run.attempts, worker=self.worker_id)

    async def _finish(self, run: Run, outcome: Outcome) -> None:
        try:
            done = await self.store.finish(
                Finish(
                    run.id,
                    outcome.status,
                    outcome.result,
                    outcome.error,
                    {"error_type": outcome.error_type},
                    usage=outcome.metered,
                ),
                epoch=run.attempts,
            )
        except Fenced:
            self._fenced(run)
            return
        if done is None:
            return
        record_outcome(done, outcome.error_type)
        if self.trail is not None:
            self.trail.run_finished(done, outcome.error_type, self.worker_id)


def record_outcome(run: Run, error_type: str | None = None) -> None:
    agent, op = run.agent_type, metrics.operation(run.operation)
    metrics.child(metrics.REQUESTS, agent, run.status.outcome, op).inc()
    metrics.child(metrics.RUN_OUTCOMES, agent, run.status.value).inc()
    if run.started_at and run.finished_at:
        metrics.child(metrics.REQUEST_DURATION, agent, op).observe(
            max(0.0, (run.finished_at - run.started_at).total_seconds())
        )
    if run.status.outcome == "error":
        severity = "high" if run.status is RunStatus.failed else "medium"
        metrics.child(metrics.ERRORS, agent, error_type or run.status.value, severity).inc()
