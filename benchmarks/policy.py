"""Policy gate benchmark: the latency ``PolicyGate.check`` adds to every tool call, and the
cost of ``redact`` on typical tool output.

``check`` runs over the whole labelled corpus (tests/policy_corpus) repeated until at least
``min_calls`` calls, in corpus order shuffled once with a fixed seed, so the mix is the
corpus mix (two thirds benign; two thirds shell commands) and runs are comparable. Each call
is timed on its own; the gate is built once, as in the runtime. Percentiles are also given for
benign calls alone (closer to production traffic: the malicious third holds the heaviest,
most obfuscated commands) and for ``run_command`` alone (the expensive tool to judge).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import percentile
from quarterdeck.security.policy import PolicyGate, redact
from quarterdeck.security.policy.corpus import load

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "policy_corpus"
WORKSPACE = Path("/srv/quarterdeck/workspaces/run_bench")


def _outputs() -> list[str]:
    """Tool outputs of the kinds the runtime stores: test runs, diffs, listings, source, logs
    (a few with a secret in them, so the slow path is measured too)."""
    pytest_out = "\n".join(
        [f"tests/unit/test_mod{i}.py::test_case_{j} PASSED" for i in range(8) for j in range(6)]
        + ["", "============ 48 passed in 1.93s ============"]
    )
    changes = [
        f"-    return secrets.token_urlsafe({n})\n+    return secrets.token_urlsafe({n * 2})"
        for n in range(40)
    ]
    header = ["diff --git a/src/app/tokens.py b/src/app/tokens.py", "index 3f78685..9fceb02 100644"]
    diff = "\n".join([*header, *changes])
    listing = "\n".join(
        f"-rw-r--r-- 1 agent agent {1000 + i} Nov 24 01:00 module_{i}.py" for i in range(60)
    )
    source = CORPUS.parent.parent / "src" / "quarterdeck" / "security" / "policy" / "gate.py"
    lockfile = "\n".join(f'"pkg{i}": {{"integrity": "sha512-{"Ab9+" * 21}=="}}' for i in range(30))
    log = "\n".join(
        f"2026-11-24T01:00:{i:02d}Z INFO request id={i} status=200 path=/api/items"
        for i in range(60)
    )
    secret = log + "\nexport AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
    return [pytest_out, diff, listing, source.read_text(), lockfile, log, secret, "ok\n"]


def gate_latency(min_calls: int = 50_000, redact_rounds: int = 2_000) -> dict[str, Any]:
    started = time.perf_counter()
    gate = PolicyGate.load()
    load_ms = (time.perf_counter() - started) * 1000
    cases = load([CORPUS])
    random.Random(7).shuffle(cases)
    calls = [(c.tool, c.input, c.label == "benign") for c in cases]
    for tool, data, _ in calls:  # warm up: first-use imports and regex caches
        gate.check(tool, data, workspace=WORKSPACE)
    timings: list[float] = []
    shell: list[float] = []
    benign: list[float] = []
    while len(timings) < min_calls:
        for tool, data, is_benign in calls:
            t = time.perf_counter()
            gate.check(tool, data, workspace=WORKSPACE)
            elapsed = time.perf_counter() - t
            timings.append(elapsed)
            if tool == "run_command":
                shell.append(elapsed)
            if is_benign:
                benign.append(elapsed)
    outputs = _outputs()
    redact_timings: list[float] = []
    for _ in range(redact_rounds):
        for text in outputs:
            t = time.perf_counter()
            redact(text)
            redact_timings.append(time.perf_counter() - t)
    return {
        "rules": len(gate.rules),
        "corpus_cases": len(cases),
        "gate_load_ms": round(load_ms, 1),
        "check_calls": len(timings),
        "check_p50_us": round(percentile(timings, 50) * 1e6, 1),
        "check_p99_us": round(percentile(timings, 99) * 1e6, 1),
        "check_max_us": round(max(timings) * 1e6, 1),
        "goal_check_p99_us": 500,
        "benign_p50_us": round(percentile(benign, 50) * 1e6, 1),
        "benign_p99_us": round(percentile(benign, 99) * 1e6, 1),
        "run_command_p50_us": round(percentile(shell, 50) * 1e6, 1),
        "run_command_p99_us": round(percentile(shell, 99) * 1e6, 1),
        "redact_calls": len(redact_timings),
        "redact_output_bytes_avg": sum(len(o) for o in outputs) // len(outputs),
        "redact_p50_us": round(percentile(redact_timings, 50) * 1e6, 1),
        "redact_p99_us": round(percentile(redact_timings, 99) * 1e6, 1),
        "redact_max_us": round(max(redact_timings) * 1e6, 1),
    }


if __name__ == "__main__":
    for key, value in gate_latency().items():
        print(f"{key:<26} {value}")
