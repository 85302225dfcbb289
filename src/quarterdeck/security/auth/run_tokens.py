"""Gateway tokens minted for one run: what a run's agent process (the Claude Code CLI the worker
starts in the run's sandbox) calls the gateway with, as ``ANTHROPIC_AUTH_TOKEN``.

Why not the submitting key: that key can submit runs, read them and spend its whole budget;
the process holding the token runs whatever the model asks for, so what it holds must be worth
as little as possible. A run token can call the gateway for its run and nothing else
(:attr:`Principal.run_id` limits :meth:`Principal.can` to ``gateway:use``), and it dies with the
run: it is live only while its run is ``running`` at the attempt that minted it and no cancel
was asked (cancelling a running run flags it until its worker stops it; no call made in that
window is wanted). That is checked against ``runs`` on every use (one primary-key join, no
cache), so a cancelled, finished, requeued or erased run's token stops working at once, and a
new attempt's token fences the old attempt's (a stalled worker's CLI can no longer spend for the
run).

A token looks like ``qd_run_01JF3…_<40 characters of base62>``: ``qd_`` and the run id
(``run_<ULID>``) then the secret (about 238 bits). The run id is public (it is how the row is
found and what logs may show); only a SHA-256 digest of the whole token is stored and it is
compared in constant time, for the reasons given in :mod:`~quarterdeck.security.auth.keys`.

The principal acts in the run's tenant and, when the run was submitted with a key, as that key
(``key_id``): the key's gateway budget, tokens per minute, request limits and fallback config
apply to the run's calls as they would to the key's own; without one it is ``run:<run id>``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime

import structlog

from quarterdeck.exceptions import Fenced, ValidationFailed
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.ids import is_id
from quarterdeck.security.auth import keys
from quarterdeck.security.auth import repository as repo
from quarterdeck.security.auth.errors import Unauthenticated
from quarterdeck.security.auth.permissions import Role
from quarterdeck.security.auth.principal import AuthMethod, Principal
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

RUN_TOKEN_PREFIX = "qd_run_"
_TOKEN_RE = re.compile(
    rf"^qd_(?P<run>run_[0-9A-HJKMNP-TV-Z]{{26}})_(?P<secret>[A-Za-z0-9]{{{keys.SECRET_LENGTH}}})$"
)
_DEAD = "the run token is not valid (wrong, replaced, or its run is no longer running)"


def is_run_token(token: str | None) -> bool:
    """Whether ``token`` claims to be a run token (it may still be malformed or dead)."""
    return token is not None and token.startswith(RUN_TOKEN_PREFIX)


def parse_run_token(token: str) -> str | None:
    """The run id of a well-formed run token; None for anything else."""
    match = _TOKEN_RE.fullmatch(token)
    return match["run"] if match is not None else None


class RunTokens:
    """Mint a run attempt's token; resolve a presented one to its principal (or 401)."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def mint(self, run_id: str, attempt: int) -> str:
        """A fresh token for this attempt of the run; replaces the run's earlier token (an older
        attempt's token stops working at once: fencing).

        Only the attempt that holds the run may mint (``running`` at ``attempts == attempt``,
        as after ``RunStore.claim``); otherwise :class:`~quarterdeck.exceptions.Fenced`, and the
        run's current token is left alone. The token itself is returned once and never stored.
        """
        if not is_id(run_id, "run"):
            raise ValidationFailed(
                f"run_id: {run_id!r} is not a run id (run_<ULID>)",
                errors=[{"field": "run_id", "message": "not a run id"}],
            )
        if attempt < 1:
            raise ValidationFailed(
                f"attempt: must be at least 1, not {attempt}",
                errors=[{"field": "attempt", "message": "must be at least 1"}],
            )
        secret = "".join(secrets.choice(keys.SECRET_ALPHABET) for _ in range(keys.SECRET_LENGTH))
        token = f"qd_{run_id}_{secret}"
        async with self.db.acquire() as conn:
            stored = await repo.upsert_run_token(
                conn, run_id, attempt, keys.digest(token), self.clock()
            )
        if not stored:
            raise Fenced(
                f"run {run_id}: attempt {attempt} does not hold it (it is not running at that "
                "attempt), so no gateway token was minted for it"
            )
        log.info("auth.run_token_minted", run_id=run_id, attempt=attempt)
        return token

    async def resolve(self, token: str) -> Principal:
        """The principal of a live run token, else raise Unauthenticated."""
        run_id = parse_run_token(token)
        if run_id is None:
            raise Unauthenticated("the run token is malformed")
        async with self.db.acquire() as conn:
            row = await repo.get_run_token(conn, run_id)
        # The digest first: only the holder of the current token learns why it is dead.
        if row is None or not keys.verify(token, row.digest):
            log.info("auth.rejected", run_id=run_id, reason="unknown or replaced run token")
            raise Unauthenticated(_DEAD)
        if row.cancel_requested and row.status == "running":
            log.info("auth.rejected", run_id=run_id, reason="run token of a cancelled run")
            raise Unauthenticated(f"the run token is dead: run {run_id} is being cancelled")
        if row.status != "running" or row.attempts != row.attempt:
            log.info(
                "auth.rejected",
                run_id=run_id,
                reason="run token of an ended or lost attempt",
                status=row.status,
                attempt=row.attempt,
                attempts=row.attempts,
            )
            raise Unauthenticated(
                f"the run token is dead: run {run_id} is {row.status} at attempt "
                f"{row.attempts}, the token was minted for attempt {row.attempt}"
            )
        return Principal(
            row.key_id or f"run:{run_id}",
            f"run {run_id}",
            Role.submitter,
            row.tenant,
            AuthMethod.run_token,
            gateway_fallback=row.gateway_fallback,
            run_id=run_id,
        )
