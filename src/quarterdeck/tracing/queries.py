"""The asyncpg instrumentation, skipping at once the queries whose span would be dropped anyway.

Why: the instrumentation wraps every query. Before the sampler is even asked it parses the
statement for the span's name and builds its attributes, then starts a span, attaches it and
ends it, also for the queries :class:`~quarterdeck.tracing.setup.QuietRoots` drops (outside any
trace: the worker's claims, group-committed checkpoints and finishes, polls, heartbeats,
elections) and for those inside a trace the sampler left out when the sampler follows its
parent's decision (``parentbased_*``, the usual choice). Profiled under the tracing benchmark,
that was a third of what the instrumentation cost the event loop.

The rule here is the samplers' own, applied before the work rather than after it: a query whose
current span is invalid (QuietRoots drops it, always) or not sampled while the sampler drops the
children of an unsampled parent runs as if uninstrumented. Every span the sampler would keep is
made exactly as the instrumentation makes it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.trace.sampling import Sampler

__all__ = ["QuietAsyncPGInstrumentor", "drops_unsampled_children"]


def drops_unsampled_children(sampler: Sampler) -> bool:
    """Whether ``sampler`` drops every span whose parent (remote or local) was not sampled:
    the SDK's ``ParentBased`` with its default ``AlwaysOff`` for both, read from its
    description (the public part of it), so an unknown or custom sampler is never assumed to."""
    description = sampler.get_description()
    inner = getattr(sampler, "inner", None)  # QuietRoots: judge the sampler it wraps
    if isinstance(inner, Sampler):
        description = inner.get_description()
    return (
        description.startswith("ParentBased{")
        and "remoteParentNotSampled:AlwaysOffSampler" in description
        and "localParentNotSampled:AlwaysOffSampler" in description
    )


class QuietAsyncPGInstrumentor(AsyncPGInstrumentor):
    """asyncpg query spans, as ``opentelemetry-instrumentation-asyncpg`` makes them, minus
    the work for spans the sampler would drop (the module's rule)."""

    def __init__(self, *, capture_parameters: bool, parent_decides: bool) -> None:
        super().__init__(capture_parameters=capture_parameters)  # type: ignore[no-untyped-call]
        self.parent_decides = parent_decides

    def _skip(self) -> bool:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return True
        return self.parent_decides and not context.trace_flags.sampled

    async def _do_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if self._skip():
            return await func(*args, **kwargs)
        return await super()._do_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

    async def _do_cursor_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if self._skip():
            return await func(*args, **kwargs)
        return await super()._do_cursor_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]

    async def _do_prepared_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if self._skip():
            return await func(*args, **kwargs)
        return await super()._do_prepared_execute(func, instance, args, kwargs)  # type: ignore[no-untyped-call]
