"""Load and bookkeeping: submit runs through the faults, then audit what the deployment did.

Everything is read back through the public API (runs, events, incidents, ``/metrics``), the same
surface an operator has, so an audit never depends on reaching into Postgres directly:

- *lost*: a submission whose run id never came back, or a run missing from ``GET /v1/runs`` or
  still not terminal when the wait ended;
- *duplicated*: more than one run per idempotency key, a turn number recorded twice in a run's
  events, or a run whose token totals differ from the sum of its turns (a turn billed twice).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

TERMINAL = frozenset(
    {"succeeded", "failed", "cancelled", "timed_out", "max_turns", "budget_exceeded"}
)


def ts(value: str | None) -> float | None:
    """An API timestamp as epoch seconds (the runner's fault times are epoch seconds too)."""
    return datetime.fromisoformat(value).timestamp() if value else None


class Submitter(threading.Thread):
    """Submits ``n`` runs spread evenly over ``spread_s`` seconds, each with its own idempotency
    key, to whichever API replica answers; a failed submission (503 while Postgres restarts, a
    refused connection from a killed replica) is retried with the *same* key, which is exactly
    the retry that must never create a second run."""

    def __init__(
        self, urls: Callable[[], Sequence[str]], n: int, spread_s: float, prefix: str
    ) -> None:
        super().__init__(name="chaos-submitter", daemon=True)
        self.urls, self.n, self.spread_s, self.prefix = urls, n, spread_s, prefix
        self.ids: dict[str, str] = {}
        self.submitted_at: dict[str, float] = {}
        self.retries = 0
        self.gave_up: list[str] = []

    def run(self) -> None:
        started = time.monotonic()
        with httpx.Client(timeout=10) as client:
            for i in range(self.n):
                wait = started + self.spread_s * i / max(1, self.n) - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                key = f"{self.prefix}-{i:05d}"
                run_id = self._submit(client, key, i)
                if run_id is None:
                    self.gave_up.append(key)
                else:
                    self.ids[key] = run_id

    def _submit(self, client: httpx.Client, key: str, i: int) -> str | None:
        deadline = time.monotonic() + 120
        attempt = 0
        while time.monotonic() < deadline:
            urls = list(self.urls())
            if urls:
                url = urls[(i + attempt) % len(urls)]
                try:
                    r = client.post(
                        f"{url}/v1/runs",
                        json={"prompt": f"chaos task {key}"},
                        headers={"Idempotency-Key": key},
                    )
                    if r.status_code in (200, 201, 202):
                        self.submitted_at[key] = time.time()
                        return str(r.json()["id"])
                except httpx.HTTPError:
                    pass
            attempt += 1
            self.retries += 1
            time.sleep(0.25)
        return None


def list_runs(url: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor: str | None = None
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = client.get("/v1/runs", params=params).raise_for_status().json()
            runs += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return runs


def wait_terminal(
    urls: Callable[[], Sequence[str]], ids: Sequence[str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Poll until every id is terminal or ``timeout``; returns the last listing by id."""
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    runs: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for url in urls():
            try:
                runs = {r["id"]: r for r in list_runs(url)}
                break
            except httpx.HTTPError:
                continue
        if all(i in runs and runs[i]["status"] in TERMINAL for i in wanted):
            break
        time.sleep(1.0)
    return runs


async def _events(url: str, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    sem = asyncio.Semaphore(8)
    out: dict[str, list[dict[str, Any]]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(run_id: str) -> None:
            async with sem:
                r = await client.get(f"/v1/runs/{run_id}/events")
                out[run_id] = r.raise_for_status().json()

        await asyncio.gather(*(one(i) for i in ids))
    return out


def fetch_events(url: str, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    return asyncio.run(_events(url, ids))


@dataclass
class Audit:
    submitted: int
    outcomes: Counter[str]
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    resumed: int = 0
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def audit(url: str, sub: Submitter, runs: dict[str, dict[str, Any]]) -> Audit:
    """Lost and duplicated runs and turns, by the module docstring's definitions."""
    mine = {k: v for k, v in sub.ids.items()}
    result = Audit(submitted=sub.n, outcomes=Counter())
    result.lost += [f"{key}: never accepted" for key in sub.gave_up]
    for key, run_id in mine.items():
        run = runs.get(run_id)
        if run is None:
            result.lost.append(f"{key}: {run_id} missing")
        elif run["status"] not in TERMINAL:
            result.lost.append(f"{key}: {run_id} still {run['status']}")
    per_key = Counter(r.get("idempotency_key") for r in runs.values() if r.get("idempotency_key"))
    result.duplicated += [f"{k}: {n} runs" for k, n in per_key.items() if n > 1]
    present = [i for i in mine.values() if i in runs]
    result.events = fetch_events(url, present)
    for run_id in present:
        run = runs[run_id]
        result.outcomes[run["status"]] += 1
        result.resumed += int(run["attempts"] >= 2)
        turns = [e for e in result.events[run_id] if e["type"] == "turn"]
        numbers = [e["turn"] for e in turns]
        if len(numbers) != len(set(numbers)):
            result.duplicated.append(f"{run_id}: turn recorded twice {sorted(numbers)}")
        billed_in = sum(e["data"]["usage"]["input_tokens"] for e in turns)
        billed_out = sum(e["data"]["usage"]["output_tokens"] for e in turns)
        if (run["input_tokens"], run["output_tokens"]) != (billed_in, billed_out):
            result.duplicated.append(
                f"{run_id}: tokens {run['input_tokens']}/{run['output_tokens']} "
                f"!= sum of turns {billed_in}/{billed_out}"
            )
    return result


def incidents(url: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, timeout=10) as client:
        items: list[dict[str, Any]] = (
            client.get("/v1/incidents", params={"limit": 500}).raise_for_status().json()["items"]
        )
        return items


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One replica's ``/metrics`` as ``{(sample name, sorted labels): value}``; empty if down."""
    try:
        text = httpx.get(url, timeout=3).text
    except httpx.HTTPError:
        return {}
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def metric(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def leader_of(urls: Sequence[str]) -> str | None:
    """The API URL whose health monitor currently holds the leader lock, if any answers so."""
    for url in urls:
        try:
            if httpx.get(f"{url}/v1/health/checks", timeout=2).json().get("leader"):
                return url
        except (httpx.HTTPError, ValueError):
            continue
    return None
