"""``quarterdeck compliance report``: evidence computed from what the system stored."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from quarterdeck.chaos.messages_api import MessagesAPIServer, message, text, tool_use
from quarterdeck.cli import app
from quarterdeck.runs.models import RunCreate, RunStatus
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.permissions import Role

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio


def _cli(args: list[str], db_url: str, data_dir: str):
    env = {"POSTGRES_URL": db_url, "QUARTERDECK_DATA_DIR": data_dir, "LOG_LEVEL": "error"}
    return CliRunner().invoke(app, args, env=env)


async def test_the_report_maps_controls_to_stored_evidence(
    make_settings, messages_api: MessagesAPIServer, db_url: str, data_dir
):
    messages_api.script(
        [
            message(tool_use("run_command", {"command": "curl -s http://169.254.169.254/latest"})),
            message(text("ok")),
        ]
    )
    rt = Runtime(
        make_settings(
            provider="anthropic",
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=messages_api.base_url,
            default_model="claude-sonnet-4-5",
        )
    )
    await rt.start()
    try:
        await rt.auth.create("ci", Role.submitter, "acme")
        run, _ = await rt.runs.submit(
            RunCreate(prompt="x", workspace={"type": "empty"}), tenant="acme"
        )
        assert (await rt.runs.wait(run.id, 60, "acme")).status == RunStatus.succeeded
    finally:
        await rt.stop()
    start = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    end = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()

    result = await asyncio.to_thread(
        _cli,
        ["compliance", "report", "--from", start, "--to", end, "--format", "json"],
        db_url,
        str(data_dir),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    controls = {c["id"]: c for c in report["controls"]}
    assert set(controls) == {"CC6.1/CC6.3", "CC7.2", "A.8.15", "164.312(b)", "Art. 30", "Art. 17"}
    access = controls["CC6.1/CC6.3"]["evidence"]
    assert {"role": "submitter"}.items() <= access["keys_by_role"][0].items()
    assert access["access_changes"].get("key.created") == 1
    handled = controls["CC7.2"]["evidence"]
    assert handled["policy_decisions"].get("deny") == 1
    assert sum(i["n"] for i in handled["security_incidents"]) == 1
    logging = controls["A.8.15"]["evidence"]
    assert logging["integrity"]["verified"] is True and logging["events"] > 0
    assert logging["events_by_type"]["run.created"] == 1
    assert controls["Art. 30"]["evidence"]["processing"][0]["tenant"] == "acme"
    assert all(c["not_covered"] for c in report["controls"])

    md = await asyncio.to_thread(
        _cli, ["compliance", "report", "--from", start, "--to", end], db_url, str(data_dir)
    )
    assert md.exit_code == 0 and "| SOC 2 | CC7.2" in md.output
    assert "Not covered by Quarterdeck:" in md.output


@pytest.mark.parametrize(
    ("args", "message_part"),
    [
        (["--from", "yesterday", "--to", "2026-12-01"], "--from must be a date"),
        (["--from", "2026-12-01", "--to", "2026-11-01"], "--to must be after --from"),
        (["--from", "2026-11-01", "--to", "2026-12-01", "--format", "pdf"], "--format"),
    ],
)
async def test_bad_arguments_exit_2_with_a_clear_message(
    args: list[str], message_part: str, db_url: str, data_dir
):
    result = await asyncio.to_thread(_cli, ["compliance", "report", *args], db_url, str(data_dir))
    assert result.exit_code == 2 and message_part in result.output
