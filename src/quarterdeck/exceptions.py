"""One exception tree for the whole project.

Every error a caller can see derives from :class:`QuarterdeckError`. Each class carries the HTTP
status and problem type it maps to, so ``app.py`` has a single handler that turns any of them into
``application/problem+json`` (RFC 9457), and the CLI can print the same ``detail``.
"""

from __future__ import annotations

from typing import Any


class QuarterdeckError(Exception):
    status: int = 500
    type_slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}

    @property
    def problem_type(self) -> str:
        return f"https://quarterdeck.dev/problems/{self.type_slug}"


class ConfigError(QuarterdeckError):
    """Settings failed validation. ``errors`` lists (setting, reason) for every bad field."""

    status = 500
    type_slug = "config-error"
    title = "Invalid configuration"

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        lines = "\n".join(f"  - {name}: {reason}" for name, reason in errors)
        super().__init__(f"invalid configuration ({len(errors)} problem(s)):\n{lines}")
        self.errors = errors


class ValidationFailed(QuarterdeckError):
    status = 422
    type_slug = "validation-error"
    title = "Request validation failed"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail, extra={"errors": errors or []})


class NotFound(QuarterdeckError):
    status = 404
    type_slug = "not-found"
    title = "Not found"


class Conflict(QuarterdeckError):
    status = 409
    type_slug = "conflict"
    title = "Conflict"


class IdempotencyConflict(Conflict):
    type_slug = "idempotency-key-reused"
    title = "Idempotency key reused with a different request"


class InvalidState(Conflict):
    type_slug = "invalid-state"
    title = "Operation not allowed in the current state"


class Fenced(Conflict):
    """A worker tried to record for a run attempt it no longer holds.

    Each claim of a run starts a new attempt whose number (``runs.attempts``) is the fencing
    epoch; the run store accepts writes for a run only from the attempt that holds it (status
    ``running`` and the same epoch). A worker that stalled long enough for its job to be picked
    up again gets this instead of recording a second copy of the work, and stops.
    """

    title = "Run attempt lost"
    type_slug = "run-attempt-lost"


class ScalingConflict(Conflict):
    """Another autoscaler (an HPA, KEDA's included) already writes the worker Deployment's
    replicas; a second writer would fight it over the same count, so the scaler refuses."""

    type_slug = "scaling-conflict"
    title = "Another autoscaler owns the Deployment"


class ScalingError(QuarterdeckError):
    """The Kubernetes API refused or failed a call the scaler made (its reason in ``detail``)."""

    status = 502
    type_slug = "scaling-error"
    title = "Kubernetes API error"


class RolloutError(QuarterdeckError):
    """A rollout's Kubernetes call was refused or failed, or its target never became ready."""

    status = 502
    type_slug = "rollout-error"
    title = "Rollout Kubernetes error"


class Unavailable(QuarterdeckError):
    """A dependency is down; the caller should retry after ``retry_after`` seconds."""

    status = 503
    type_slug = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail, extra={"retry_after": retry_after})
        self.retry_after = retry_after


class StoreError(QuarterdeckError):
    """The database failed in a way that is not the caller's fault."""

    status = 503
    type_slug = "store-error"
    title = "Storage error"


class ProviderError(QuarterdeckError):
    """A model provider call failed. Carries what the retry policy needs to decide."""

    status = 502
    type_slug = "provider-error"
    title = "Model provider error"

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        error_type: str = "api_error",
        retry_after: float | None = None,
        request_id: str | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error_type = error_type
        self.retry_after = retry_after
        self.request_id = request_id
        self.retryable = retryable

    @property
    def overloaded(self) -> bool:
        return self.error_type == "overloaded_error" or self.status_code == 529
