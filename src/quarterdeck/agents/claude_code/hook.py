"""Claude Code's PreToolUse command hook: ask the worker's policy gate, block on any doubt.

Claude Code runs this file once per tool call, inside the run's sandbox, as
``<python> -I -S hook.py <socket> <timeout_s>`` (:func:`hook_settings` writes that command).
It must import nothing but the standard library: ``-I -S`` keeps the workspace, ``PYTHONPATH``
and site-packages out of the interpreter, so a repository cannot shadow a module and open the
gate, and the sandbox need not see Quarterdeck at all.

Why a command hook and why exit 2: measured with CLI 2.1.197, an HTTP hook whose server is
down, answers non-2xx or times out lets the tool call *run*, and so does a command hook that
exits 1 or any code but 2, or that the CLI times out. Only exit 2 blocks (its stderr becomes the
reason Claude reads). So everything that is not a well-formed answer from the gate -- no
socket, refused connection, our own deadline passed, a truncated or malformed answer -- ends
here in exit 2. :func:`hook_settings` gives the CLI a timeout longer than ours, so our deadline
always fires first.

Protocol with ``gate.py``'s ``GateServer``: one line of JSON out (the hook input as received),
half-close, one line of JSON back (the hook output), then the server closes.
"""

from __future__ import annotations

import json
import math
import shlex
import socket
import sys
import time
from typing import Any

FAIL_CLOSED = "Quarterdeck policy gate unreachable; blocking (fail-closed): "
MAX_ANSWER = 1 << 20
"""Bytes; an answer is a few hundred. More means something else is on the socket."""
CLI_TIMEOUT_MARGIN_S = 30
"""How much longer the CLI waits than this script: a hook the CLI times out lets the call run."""
DECISIONS = ("allow", "deny")


class GateError(Exception):
    """Why the call is blocked: the message Claude reads after :data:`FAIL_CLOSED`."""


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise GateError("no answer before the hook's deadline")
    return left


def ask(socket_path: str, request: bytes, timeout_s: float) -> dict[str, Any]:
    """Send one hook input to the gate and return its validated answer (or raise)."""
    deadline = time.monotonic() + timeout_s
    try:
        payload = json.loads(request)
    except ValueError as exc:
        raise GateError(f"Claude Code sent input that is not JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise GateError("Claude Code sent input that is not a JSON object")
    line = json.dumps(payload, separators=(",", ":")).encode() + b"\n"  # one line, always
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.settimeout(_remaining(deadline))
            conn.connect(socket_path)
            conn.sendall(line)
            conn.shutdown(socket.SHUT_WR)
            received = bytearray()
            while True:
                conn.settimeout(_remaining(deadline))
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
                if len(received) > MAX_ANSWER:
                    raise GateError(f"the answer is longer than {MAX_ANSWER} bytes")
        except TimeoutError as exc:
            raise GateError(f"no answer within {timeout_s:g} s") from exc
        except OSError as exc:
            raise GateError(f"{socket_path}: {exc.strerror or exc}") from exc
    return parse_answer(bytes(received))


def parse_answer(received: bytes) -> dict[str, Any]:
    """The gate's answer, checked to be exactly what Claude Code must get (or raise)."""
    if not received:
        raise GateError("the gate closed the connection without answering")
    if not received.endswith(b"\n") or received.count(b"\n") != 1:
        raise GateError("the answer is truncated or is not one line")
    try:
        answer = json.loads(received)
    except ValueError as exc:
        raise GateError(f"the answer is not JSON ({exc})") from exc
    output = answer.get("hookSpecificOutput") if isinstance(answer, dict) else None
    if not isinstance(output, dict):
        raise GateError("the answer has no hookSpecificOutput")
    if output.get("hookEventName") != "PreToolUse":
        raise GateError("the answer is not for PreToolUse")
    if output.get("permissionDecision") not in DECISIONS:
        raise GateError(f"the decision is not one of {'/'.join(DECISIONS)}")
    if not isinstance(output.get("permissionDecisionReason", ""), str):
        raise GateError("the reason is not text")
    return {"hookSpecificOutput": output}


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 3:
            raise GateError("usage: hook.py <socket> <timeout_s>")
        try:
            timeout_s = float(argv[2])
        except ValueError as exc:
            raise GateError(f"timeout {argv[2]!r} is not a number") from exc
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise GateError(f"timeout {argv[2]!r} is not a positive number")
        answer = ask(argv[1], sys.stdin.buffer.read(), timeout_s)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        return 0
    except GateError as exc:
        why = str(exc)
    except BaseException as exc:  # whatever broke, the call must not run
        why = f"{type(exc).__name__}: {exc}"
    try:
        sys.stderr.write(FAIL_CLOSED + why + "\n")
        sys.stderr.flush()
    except OSError:
        pass  # exit 2 even without stderr: 2 is what blocks the call
    return 2


def hook_settings(python: str, hook_path: str, socket: str, timeout_s: float) -> dict[str, Any]:
    """The ``--settings`` fragment installing this hook for every tool (matcher ``*``).

    The CLI's own timeout is ours plus :data:`CLI_TIMEOUT_MARGIN_S`, in whole seconds: the CLI
    treats a hook it times out as a non-blocking error, which would let the call run.
    """
    words = [python, "-I", "-S", hook_path, socket, f"{timeout_s:g}"]
    command = " ".join(shlex.quote(word) for word in words)
    hook = {
        "type": "command",
        "command": command,
        "timeout": math.ceil(timeout_s) + CLI_TIMEOUT_MARGIN_S,
    }
    return {"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [hook]}]}}


if __name__ == "__main__":
    sys.exit(main(sys.argv))
