"""The real tool runner: file, search, command and fetch tools confined to a run's workspace.

Every call is validated against a pydantic model (the same model produces the JSON schema the
model is shown), so a malformed call is refused before anything runs. Whatever goes wrong --
bad input, unknown tool, a path escaping the workspace, a timeout, a denied URL -- becomes an
``is_error`` tool result the model can read and react to; ``run()`` never raises, because one
hostile call must not fail the whole run. Each call also returns an audit record (inputs,
output, files touched with hashes, network decisions, permissions used) that the executor
stores as the run's ``tool_call`` event.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from quarterdeck.agents.changes import Snapshot, command_record
from quarterdeck.agents.fetch import http_fetch
from quarterdeck.agents.sandbox import (
    AGENT_STATE_DIRNAME,
    TMP_DIRNAME,
    SandboxLimits,
    run_sandboxed,
)
from quarterdeck.agents.workspace import SourcePolicy, Workspace, WorkspaceError, parse_source
from quarterdeck.config import Settings
from quarterdeck.providers.types import ToolResultBlock, ToolSpec, ToolUseBlock
from quarterdeck.runs.models import Run
from quarterdeck.toolcalls import (
    TOOLS as _TOOLS,
)
from quarterdeck.toolcalls import (
    EditFile,
    HttpFetch,
    ListFiles,
    ReadFile,
    RunCommand,
    Search,
    ToolError,
    WriteFile,
)

log = structlog.get_logger(__name__)

RECORD_INPUT_CHARS = 2_000
RECORD_OUTPUT_CHARS = 4_000
SEARCH_MAX_LINES = 500
LIST_MAX_ENTRIES = 2_000
_NOISE_DIRS = {".git", TMP_DIRNAME, AGENT_STATE_DIRNAME}


def _clip(text: str, limit: int, what: str = "characters") -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[output truncated: {len(text) - limit} {what} omitted]"


def _record(value: Any) -> Any:
    """Inputs as recorded: long strings (file contents) clipped so events stay small."""
    if isinstance(value, str) and len(value) > RECORD_INPUT_CHARS:
        return value[:RECORD_INPUT_CHARS] + f"...[{len(value) - RECORD_INPUT_CHARS} chars]"
    if isinstance(value, dict):
        return {str(k): _record(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_record(v) for v in value[:100]]
    return value


def _sha(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class WorkspaceTools:
    """:class:`~quarterdeck.runs.executor.ToolRunner` backed by per-run workspaces."""

    def __init__(self, settings: Settings, *, limits: SandboxLimits | None = None) -> None:
        self.settings = settings
        self.limits = limits or SandboxLimits()
        self._workspaces: dict[str, Workspace] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._broken: dict[str, str] = {}
        """Runs whose workspace could not be made, and why: said again on every call instead
        of copying or cloning up to the size limit once per call."""
        self._over: set[str] = set()
        """Runs whose last command left the workspace over the size limit."""
        self.egress_sockets: dict[str, Path] = {}
        """Run id -> the egress proxy socket open for its current command (the planner's)."""

    def specs(self) -> list[ToolSpec]:
        return [
            ToolSpec(name, " ".join((model.__doc__ or name).split()), model.model_json_schema())
            for name, (model, _) in _TOOLS.items()
        ]

    async def workspace(self, run: Run) -> Workspace:
        """The run's workspace: reopened if it exists (a resumed run), else created from
        ``run.params["workspace"]``."""
        async with self._locks.setdefault(run.id, asyncio.Lock()):
            ws = self._workspaces.get(run.id)
            if run.id in self._broken:
                raise WorkspaceError(self._broken[run.id])
            if ws is None:
                ws = Workspace(
                    self.settings.data_dir, run.id, retention=self.settings.workspace_retention
                )
                if not ws.ready:
                    try:
                        await ws.create(
                            parse_source(run.params.get("workspace")),
                            policy=SourcePolicy.of(self.settings),
                        )
                    except WorkspaceError as exc:
                        if len(self._broken) >= 1024:
                            self._broken.pop(next(iter(self._broken)))
                        message = f"the run's workspace could not be prepared: {exc.detail}"
                        self._broken[run.id] = message
                        raise WorkspaceError(message) from exc
                if len(self._workspaces) >= 1024:  # cheap to reopen; don't grow forever
                    self._workspaces.pop(next(iter(self._workspaces)))
                self._workspaces[run.id] = ws
            return ws

    def cleanup(self, run: Run, status: str) -> bool:
        """Forget the run and apply the retention policy to its workspace."""
        self._workspaces.pop(run.id, None)
        self._locks.pop(run.id, None)
        self._broken.pop(run.id, None)
        self._over.discard(run.id)
        ws = Workspace(self.settings.data_dir, run.id, retention=self.settings.workspace_retention)
        return ws.cleanup(status)

    async def run(self, run: Run, call: ToolUseBlock) -> tuple[ToolResultBlock, dict[str, Any]]:
        started = time.monotonic()
        event: dict[str, Any] = {
            "tool": call.name,
            "input": _record(call.input),
            "output": "",
            "is_error": False,
            "duration_ms": 0.0,
            "exit_code": None,
            "timed_out": False,
            "isolation": None,
            "files_changed": [],
            "network": [],
            "permissions": list(_TOOLS[call.name][1]) if call.name in _TOOLS else [],
        }
        try:
            if call.name not in _TOOLS:
                raise ToolError(f"unknown tool {call.name!r}; available: {', '.join(_TOOLS)}")
            model = _TOOLS[call.name][0]
            try:
                args = model.model_validate(call.input)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ToolError(f"invalid input for {call.name}: {problems}") from None
            event["input"] = _record(args.model_dump())
            ws = await self.workspace(run)
            if call.name in ("write_file", "edit_file") and run.id in self._over:
                raise ToolError(
                    "the workspace is over its size limit (QUARTERDECK_WORKSPACE_MAX_BYTES / "
                    "_MAX_FILES); delete files with run_command before writing more"
                )
            output = await getattr(self, f"_{call.name}")(ws, args, event)
        except (ToolError, WorkspaceError) as exc:
            output, event["is_error"] = str(exc), True
        except Exception as exc:  # a bug or an OS error: still the model's result, not a crash
            log.warning("tool_failed", tool=call.name, run_id=run.id, error=repr(exc))
            output, event["is_error"] = f"{call.name} failed: {type(exc).__name__}: {exc}", True
        output = _clip(output, self.settings.tool_output_limit)
        event["output"] = _clip(output, RECORD_OUTPUT_CHARS)
        event["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        result = ToolResultBlock(tool_use_id=call.id, content=output, is_error=event["is_error"])
        return result, event

    # -- files -------------------------------------------------------------------------------
    async def _read_file(self, ws: Workspace, args: ReadFile, event: dict[str, Any]) -> str:
        return await asyncio.to_thread(self._read_sync, ws, args)

    def _read_sync(self, ws: Workspace, args: ReadFile) -> str:
        fd = ws.open_fd(args.path)
        budget = self.settings.tool_output_limit
        with os.fdopen(fd, "rb") as fh:
            if b"\0" in fh.read(8192):
                size = os.fstat(fd).st_size
                raise ToolError(f"{args.path} looks binary ({size} bytes); not shown")
            fh.seek(0)
            lines: list[str] = []
            used, lineno, more = 0, 0, False
            for raw in fh:
                if lineno >= args.offset:
                    if (args.limit is not None and len(lines) >= args.limit) or used >= budget:
                        more = True
                        break
                    text = raw.decode("utf-8", errors="replace")
                    lines.append(text)
                    used += len(text)
                lineno += 1
        out = "".join(lines)
        if more:
            out += f"\n[more lines follow; call read_file with offset={lineno}]"
        return out if out or args.offset == 0 else f"[no lines at offset {args.offset}]"

    def _store(
        self,
        ws: Workspace,
        path: str,
        data: bytes | None,
        edit: tuple[str, str] | None,
        event: dict[str, Any],
    ) -> str:
        """Write (or edit) through a descriptor from :meth:`Workspace.open_fd`, hashing before and
        after for the audit record."""
        existed = os.path.lexists(ws.resolve(path))
        fd = ws.open_fd(path, write=True)
        try:
            before = _read_all(fd) if existed else None
            if edit is not None:
                old, new = edit
                try:
                    text = (before or b"").decode("utf-8")
                except UnicodeDecodeError:
                    raise ToolError(f"{path} is not UTF-8 text; cannot edit") from None
                count = text.count(old)
                if count == 0:
                    raise ToolError(f"`old` was not found in {path}; read the file and retry")
                if count > 1:
                    raise ToolError(
                        f"`old` appears {count} times in {path}; include more surrounding "
                        "context so it matches exactly once"
                    )
                data = text.replace(old, new, 1).encode("utf-8")
            assert data is not None
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        rel = ws.relative(ws.resolve(path))
        event["files_changed"].append(
            {
                "path": rel,
                "bytes": len(data),
                "sha256_before": _sha(before),
                "sha256_after": _sha(data),
            }
        )
        verb = "edited" if edit else ("overwrote" if existed else "created")
        return f"{verb} {rel} ({len(data)} bytes)"

    async def _write_file(self, ws: Workspace, args: WriteFile, event: dict[str, Any]) -> str:
        data = args.content.encode("utf-8")
        return await asyncio.to_thread(self._store, ws, args.path, data, None, event)

    async def _edit_file(self, ws: Workspace, args: EditFile, event: dict[str, Any]) -> str:
        return await asyncio.to_thread(
            self._store, ws, args.path, None, (args.old, args.new), event
        )

    async def _list_files(self, ws: Workspace, args: ListFiles, event: dict[str, Any]) -> str:
        return await asyncio.to_thread(self._list_sync, ws, args)

    def _list_sync(self, ws: Workspace, args: ListFiles) -> str:
        top = ws.resolve(args.path)
        if not top.is_dir():
            raise ToolError(f"{args.path} is not a directory")
        entries: list[str] = []
        for root, dirs, files in os.walk(top):  # never follows symlinked directories
            dirs[:] = sorted(d for d in dirs if d not in _NOISE_DIRS)
            for name in sorted(dirs + files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, top)
                if os.path.islink(full):
                    entries.append(f"{rel} -> {os.readlink(full)}")
                elif name in dirs:
                    entries.append(rel + "/")
                else:
                    entries.append(rel)
            if not args.recursive or len(entries) > LIST_MAX_ENTRIES:
                break
        shown = entries[:LIST_MAX_ENTRIES]
        if len(entries) > LIST_MAX_ENTRIES:
            shown.append(f"[listing truncated at {LIST_MAX_ENTRIES} entries]")
        return "\n".join(shown) if shown else "(empty directory)"

    # -- processes ---------------------------------------------------------------------------
    async def _search(self, ws: Workspace, args: Search, event: dict[str, Any]) -> str:
        """grep in the sandbox: a pathological regex burns a sandboxed, time-limited process
        instead of the worker's event loop (Python's ``re`` cannot be interrupted)."""
        rel = ws.relative(ws.resolve(args.path))
        argv = ["grep", "-rnIP", "--color=never", "-m", "100"]
        argv += [f"--exclude-dir={d}" for d in sorted(_NOISE_DIRS)]
        if args.glob:
            argv.append(f"--include={args.glob}")
        argv += ["-e", args.pattern, "--"] + ([rel] if rel != "." else [])  # no "./" prefix
        result = await run_sandboxed(
            argv,
            ws.path,
            timeout_s=min(30.0, self.settings.command_timeout),
            output_limit=self.settings.tool_output_limit,
            limits=self.limits,
            run_as=ws.owner,
        )
        event["isolation"] = result.isolation
        event["timed_out"] = result.timed_out
        if result.timed_out:
            raise ToolError("search timed out; use a simpler pattern or a narrower path")
        if result.exit_code == 1:
            return "no matches"
        if result.exit_code not in (0, None):
            raise ToolError(f"search failed: {result.stderr.strip()[:2000]}")
        lines = result.stdout.splitlines()
        if len(lines) > SEARCH_MAX_LINES:
            lines = [*lines[:SEARCH_MAX_LINES], f"[{len(lines) - SEARCH_MAX_LINES} more matches]"]
        return "\n".join(lines)

    async def _run_command(self, ws: Workspace, args: RunCommand, event: dict[str, Any]) -> str:
        ceiling = self.settings.command_timeout
        timeout = min(args.timeout_s or ceiling, ceiling)
        network = self.settings.sandbox_network
        egress = self.egress_sockets.get(ws.run_id)
        if network or egress:
            event["permissions"].append("net.egress" if egress else "net.connect")
        limit = self.settings.workspace_max_files
        before = await asyncio.to_thread(ws.snapshot, limit)
        result = await run_sandboxed(
            args.command,
            ws.path,
            timeout_s=timeout,
            output_limit=self.settings.tool_output_limit,
            network=network,
            limits=self.limits,
            run_as=ws.owner,
            egress_socket=egress,
        )
        event.update(
            exit_code=result.exit_code, timed_out=result.timed_out, isolation=result.isolation
        )
        over = await self._audit_changes(ws, before, event)
        head = (
            f"timed out after {timeout:g}s; the whole process tree was killed"
            if result.timed_out
            else f"exit code: {result.exit_code}"
        )
        body = head
        if result.stdout:
            body += f"\n--- stdout ---\n{result.stdout}"
        if result.stderr:
            body += f"\n--- stderr ---\n{result.stderr}"
        if over:
            body += f"\n--- workspace ---\n{over}"
        if result.timed_out or over:
            raise ToolError(body)
        return body

    async def _audit_changes(self, ws: Workspace, before: Snapshot, event: dict[str, Any]) -> str:
        """Record what the command created, changed and deleted and check the workspace's size
        (see :func:`~quarterdeck.agents.changes.command_record`); returns why it is over its
        limits, or an empty string."""
        after = await asyncio.to_thread(ws.snapshot, self.settings.workspace_max_files)
        record, over = command_record(
            before,
            after,
            max_bytes=self.settings.workspace_max_bytes,
            max_files=self.settings.workspace_max_files,
        )
        event.update(record)
        if over:
            self._over.add(ws.run_id)
        else:
            self._over.discard(ws.run_id)
        return over

    # -- network -----------------------------------------------------------------------------
    async def _http_fetch(self, ws: Workspace, args: HttpFetch, event: dict[str, Any]) -> str:
        return await http_fetch(args, self.settings, event)
