"""A real agent run: the anthropic SDK against the local Messages API, real workspace tools.

Nothing patches the SDK: the provider is pointed at a local server that speaks the Messages API
and plays a scripted conversation in which the agent writes code and tests, runs them, and ends.
"""

from __future__ import annotations

import base64
import io
import tarfile

import asyncpg
import pytest

from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text, tool_use
from quarterdeck.providers.types import Usage
from quarterdeck.runs.models import RunCreate, RunStatus, WorkspaceSpec
from quarterdeck.runtime import Runtime

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio

CALC = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n"
TEST = (
    "from calc import add, sub\n\nassert add(2, 3) == 5\nassert sub(5, 3) == 2\nprint('2 passed')\n"
)


def six_turn_script(slow_turn: int | None = None) -> list:
    """Six turns; each turn's usage is distinct so the billed sum identifies which turns ran."""
    turns = [
        [text("Let me look around."), tool_use("list_files", {"path": "."})],
        [tool_use("write_file", {"path": "calc.py", "content": CALC})],
        [tool_use("write_file", {"path": "test_calc.py", "content": TEST})],
        [tool_use("run_command", {"command": "python3 test_calc.py"})],
        [
            tool_use(
                "edit_file",
                {"path": "calc.py", "old": "return a - b", "new": "return a - b  # subtraction"},
            )
        ],
        [text("Added calc.add and calc.sub with a test; `python3 test_calc.py` passes.")],
    ]
    replies = []
    for i, blocks in enumerate(turns, start=1):
        usage = make_usage(input_tokens=1000 * i, output_tokens=100 * i, cache_read=10 * i)
        replies.append(message(*blocks, usage=usage))
        if slow_turn == i:  # the first request for this turn hangs; its retry gets the copy
            replies.insert(-1, message(*blocks, usage=usage, delay=60))
    return replies


def scripted_total() -> tuple[int, int]:
    return sum(1000 * i for i in range(1, 7)), sum(100 * i for i in range(1, 7))


@pytest.fixture
def anthropic_settings(make_settings, messages_api: MessagesAPIServer):
    def make(**extra):
        return make_settings(
            provider="anthropic",
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=messages_api.base_url,
            default_model="claude-sonnet-4-5",
            **extra,
        )

    return make


def _tar(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


async def test_an_agent_edits_files_runs_tests_and_finishes_with_a_diff(
    anthropic_settings, messages_api: MessagesAPIServer, db_url: str
):
    messages_api.script(six_turn_script())
    rt = Runtime(anthropic_settings())
    await rt.start()
    try:
        run, _ = await rt.runs.submit(
            RunCreate(
                prompt="add calc.add and calc.sub with a test",
                workspace=WorkspaceSpec(type="tar", value=_tar({"README.md": "# calc\n"})),
            )
        )
        done = await rt.runs.wait(run.id, 60)
        assert done.status == RunStatus.succeeded, done.error
        assert done.turns == 6 and done.result.startswith("Added calc.add")
        inp, out = scripted_total()
        assert (done.input_tokens, done.output_tokens) == (inp, out)
        assert done.cost_usd is not None and done.cost_usd > 0
        assert sorted(done.changed_files) == ["calc.py", "test_calc.py"]
        diff = await rt.runs.diff(run.id)
        assert "+def add(a, b):" in diff and "+    return a - b  # subtraction" in diff
        assert "README.md" not in diff  # unchanged files are not in the diff
        assert done.quality_score is not None and 0 <= done.quality_score <= 1

        events = await rt.runs.events(run.id)
        calls = [e.data for e in events if e.type == "tool_call"]
        assert [c["tool"] for c in calls] == [
            "list_files",
            "write_file",
            "write_file",
            "run_command",
            "edit_file",
        ]
        write = calls[1]
        assert write["files_changed"][0]["path"] == "calc.py"
        assert write["files_changed"][0]["sha256_before"] is None
        assert write["files_changed"][0]["sha256_after"]
        assert "fs.write" in write["permissions"]
        run_cmd = calls[3]
        assert run_cmd["exit_code"] == 0 and "2 passed" in run_cmd["output"]
        assert run_cmd["isolation"]
        # What the SDK sent: the agent type's system prompt and only its tools.
        sent = [r.json for r in messages_api.requests if r.path == "/v1/messages"]
        assert len(sent) == 6
        assert {t["name"] for t in sent[0]["tools"]} == set(rt.agent_catalog.get("coder").tools)
        assert sent[-1]["messages"][-1]["content"][0]["type"] == "tool_result"
    finally:
        await rt.stop()


async def test_a_reviewer_cannot_write(anthropic_settings, messages_api: MessagesAPIServer):
    messages_api.script(
        [
            message(tool_use("write_file", {"path": "x.py", "content": "x = 1\n"})),
            message(text("I may not write; here is my review.")),
        ]
    )
    rt = Runtime(anthropic_settings())
    await rt.start()
    try:
        run, _ = await rt.runs.submit(
            RunCreate(prompt="review", agent_type="reviewer", workspace=WorkspaceSpec(type="empty"))
        )
        done = await rt.runs.wait(run.id, 60)
        assert done.status == RunStatus.succeeded
        call = next(e.data for e in await rt.runs.events(run.id) if e.type == "tool_call")
        assert call["is_error"] and "not available to agent type 'reviewer'" in call["output"]
        assert done.changed_files == []
    finally:
        await rt.stop()


async def test_provider_errors_fail_the_run_with_the_reason(
    anthropic_settings, messages_api: MessagesAPIServer
):
    from quarterdeck.chaos.messages_api import error

    messages_api.script([error(401, "authentication_error", "invalid x-api-key")])
    rt = Runtime(anthropic_settings())
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="x"))
        done = await rt.runs.wait(run.id, 30)
        assert done.status == RunStatus.failed
        assert "invalid x-api-key" in (done.error or "")
    finally:
        await rt.stop()


async def test_escape_attempts_are_contained_and_recorded(
    anthropic_settings, messages_api: MessagesAPIServer, db_url: str
):
    messages_api.script(
        [
            message(tool_use("read_file", {"path": "../../etc/passwd"})),
            message(tool_use("run_command", {"command": "sleep 1000", "timeout_s": 1})),
            message(tool_use("run_command", {"command": "env"})),
            message(text("done")),
        ]
    )
    rt = Runtime(anthropic_settings())
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="x", workspace=WorkspaceSpec()))
        done = await rt.runs.wait(run.id, 60)
        assert done.status == RunStatus.succeeded
        calls = [e.data for e in await rt.runs.events(run.id) if e.type == "tool_call"]
        assert calls[0]["is_error"] and "root:" not in calls[0]["output"]
        assert calls[1]["timed_out"] is True
        assert "sk-ant-test" not in calls[2]["output"] and "POSTGRES" not in calls[2]["output"]
    finally:
        await rt.stop()
    conn = await asyncpg.connect(db_url)
    try:
        n = await conn.fetchval("SELECT count(*) FROM run_events WHERE type = 'tool_call'")
        assert n == 3
    finally:
        await conn.close()


async def test_an_agent_runs_on_an_openai_compatible_server(make_settings, openai_api):
    """The same loop over a vLLM/Ollama-style server through the official openai SDK."""
    from tests.support.openai_api import completion, tool_call

    openai_api.script(
        [
            completion(
                None,
                [tool_call("write_file", {"path": "hello.py", "content": "print('hello')\n"})],
                prompt_tokens=300,
                completion_tokens=40,
            ),
            completion(
                None,
                [tool_call("run_command", {"command": "python3 hello.py"})],
                prompt_tokens=400,
                completion_tokens=20,
            ),
            completion("hello.py prints hello.", prompt_tokens=500, completion_tokens=10),
        ]
    )
    rt = Runtime(
        make_settings(
            provider="openai",
            openai_base_url=f"{openai_api.base_url}/v1",
            default_model="qwen2.5-coder",
        )
    )
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="write hello.py", workspace=WorkspaceSpec()))
        done = await rt.runs.wait(run.id, 60)
        assert done.status == RunStatus.succeeded, done.error
        assert (done.turns, done.input_tokens, done.output_tokens) == (3, 1200, 70)
        # A local model has no price: it pays the fallback's (never free), marked as an estimate.
        assert done.cost_usd == float(rt.pricing.fallback.cost(Usage(1200, 70)))
        turns = [e.data for e in await rt.runs.events(run.id) if e.type == "turn"]
        assert turns and all(t["cost_estimated"] for t in turns)
        assert done.changed_files == ["hello.py"]
        calls = [e.data for e in await rt.runs.events(run.id) if e.type == "tool_call"]
        assert calls[1]["exit_code"] == 0 and "hello" in calls[1]["output"]
        sent = [r.json for r in openai_api.requests if r.path.endswith("/chat/completions")]
        assert sent[1]["messages"][-1]["role"] == "tool"
    finally:
        await rt.stop()


async def test_a_runs_cost_matches_a_hand_calculation(anthropic_settings, messages_api):
    """Cache writes (5 m and 1 h), cache reads and output, priced per class, billed once each."""
    messages_api.script(
        [
            message(
                tool_use("list_files", {"path": "."}),
                usage=make_usage(
                    input_tokens=1_200, output_tokens=300, cache_5m=2_000, cache_1h=1_000
                ),
            ),
            message(
                text("done"),
                usage=make_usage(input_tokens=150, output_tokens=500, cache_read=3_000),
            ),
        ]
    )
    rt = Runtime(anthropic_settings())
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="x", workspace=WorkspaceSpec()))
        done = await rt.runs.wait(run.id, 30)
        assert done.status == RunStatus.succeeded
        # claude-sonnet-4-5, USD per million tokens: input 3, output 15, 5-minute cache write
        # 3.75 (1.25x input), 1-hour cache write 6 (2x input), cache read 0.30 (0.1x input).
        turn1 = (1_200 * 3 + 300 * 15 + 2_000 * 3.75 + 1_000 * 6) / 1e6  # 0.0216
        turn2 = (150 * 3 + 500 * 15 + 3_000 * 0.30) / 1e6  # 0.00885
        assert done.cost_usd == pytest.approx(turn1 + turn2, abs=1e-9)
        assert done.cost_usd == pytest.approx(0.03045, abs=1e-9)
        assert done.cache_creation_tokens == 3_000 and done.cache_read_tokens == 3_000
        # Streaming calls record time to first token.
        from quarterdeck.metrics import REGISTRY

        ttft = REGISTRY.get_sample_value(
            "claude_agent_provider_time_to_first_token_seconds_count",
            {"provider": "anthropic", "model": "claude-sonnet-4-5"},  # a dated id: its row
        )
        assert ttft is not None and ttft >= 2
    finally:
        await rt.stop()
