"""The CLI's shared printing: safe text, clipping, flags without ``<bool>``, the ready banner, and
the demo latency ``up`` gives the simulated provider."""

from __future__ import annotations

import os
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.core import TyperOption
from typer.testing import CliRunner

from quarterdeck.cli import DEMO_LATENCY, app, with_demo_latency
from quarterdeck.config import load_settings
from quarterdeck.kit import banner
from quarterdeck.kit.console import clip, safe_text
from quarterdeck.kit.logs import wants_console
from quarterdeck.server import ready_info


def _printed(renderable: object, width: int = 100) -> str:
    out = Console(record=True, width=width, color_system=None, file=open(os.devnull, "w"))
    out.print(renderable)
    return out.export_text()


# -- safe_text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),  # clear screen
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC: retitle the terminal
        ("ok\rFAKE", "ok\\x0dFAKE"),  # carriage return overwrites the line
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("a\x7fb\x00c", "a\\x7fb\\x00c"),
        ("\u202eevil", "\\u202eevil"),  # right-to-left override
        ("\u2066x\u2069", "\\u2066x\\u2069"),
    ],
)
def test_safe_text_makes_controls_visible(raw: str, shown: str):
    assert safe_text(raw, markup=False) == shown


def test_safe_text_keeps_newlines_tabs_and_unicode():
    text = "line one\n\tline two: naïve café ✓"
    assert safe_text(text, markup=False) == text


def test_safe_text_defeats_rich_markup():
    printed = _printed(safe_text("[bold red]alarm[/] \x1b[31m"))
    assert "[bold red]alarm[/]" in printed
    assert "\x1b" not in printed and "\\x1b[31m" in printed


def test_safe_text_accepts_any_value():
    assert safe_text(12.5) == "12.5"
    assert safe_text(None) == "None"


def test_clip_says_how_much_was_cut():
    assert clip("short") == "short"
    long = "x" * 500
    assert clip(long, 100) == "x" * 100 + " … (500 chars)"
    assert clip("1\n2\n3\n4\n5", lines=2) == "1\n2 … (9 chars)"


# -- --help without <bool> --------------------------------------------------------------------


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in getattr(group, "commands", {}).items():  # typer's groups and click's
        if not sub.hidden:
            found += _commands(sub, (*path, name))
    return found


def test_no_help_page_shows_a_type_after_a_flag():
    root = typer.main.get_command(app)
    paths = _commands(root)
    assert len(paths) > 30  # the whole tree, not just the root
    flags = 0
    for path in paths:
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        ctx = command.context_class(command)
        for param in command.get_params(ctx):
            if isinstance(param, TyperOption) and (param.is_flag or param.count):
                flags += 1
                assert param.display_type_rich(ctx) is None, (path, param.name)  # type: ignore[attr-defined]
    assert flags > 50  # every --json, --wait, --help, ...
    runner = CliRunner(env={"COLUMNS": "200"})
    for path in ([], ["run", "submit"], ["doctor"], ["run", "list"]):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
    # Options that take a value still say which.
    submit = runner.invoke(app, ["run", "submit", "--help"]).output
    assert "<str>" in submit and "--wait" in submit and "--quiet" in submit


# -- the ready banner -------------------------------------------------------------------------


def _info(**changes: object) -> banner.ReadyInfo:
    base = {
        "version": "1.2.3",
        "api_url": "http://127.0.0.1:8080",
        "metrics_url": "http://127.0.0.1:9090/metrics",
        "provider": "simulated",
        "simulated_latency": DEMO_LATENCY,
        "auth": False,
        "isolation": "bwrap",
        "isolation_problem": None,
        "postgres": "embedded (.data/pg)",
        "workers": "1 process(es) x 50 runs",
    }
    return banner.ReadyInfo(**{**base, **changes})  # type: ignore[arg-type]


def test_banner_shows_where_and_in_which_mode():
    text = " ".join(_printed(banner.render(_info())).split())
    for needle in (
        "Quarterdeck 1.2.3 is ready",
        "API http://127.0.0.1:8080",
        "Dashboard http://127.0.0.1:8080/ui",
        "Docs http://127.0.0.1:8080/docs",
        "Metrics http://127.0.0.1:9090/metrics",
        f"simulated (no model is called; latency {DEMO_LATENCY})",
        "Auth OFF: every caller is an admin",
        "Sandbox bwrap",
        "Postgres embedded (.data/pg)",
        'quarterdeck run submit "fix the failing test"',
    ):
        assert needle in text, (needle, text)


def test_banner_of_a_real_secured_deployment_with_a_weak_sandbox():
    info = _info(provider="anthropic", auth=True, isolation="rlimits", postgres="external")
    text = " ".join(_printed(banner.render(info)).split())
    assert "Provider anthropic" in text and "simulated" not in text
    assert "Auth on: every call needs an API key" in text
    assert "rlimits (weaker than bwrap" in text
    assert "Postgres external" in text


def test_banner_of_a_worker_and_of_a_refused_sandbox():
    info = _info(api_url=None, isolation=None, isolation_problem="bwrap is not installed")
    text = " ".join(_printed(banner.render(info)).split())
    assert "API http" not in text and "Docs" not in text and "Try" not in text
    assert "Dashboard" not in text
    assert "Sandbox none: bwrap is not installed" in text


def test_banner_urls_for_wildcard_binds():
    assert banner.local_url("0.0.0.0", 8080) == "http://localhost:8080"
    assert banner.local_url("::1", 8080) == "http://[::1]:8080"
    assert banner.local_url("10.0.0.5", 81) == "http://10.0.0.5:81"


# -- the demo latency of `up` -----------------------------------------------------------------


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Quarterdeck or provider settings in the environment; restored afterwards (including
    the QUARTERDECK_SIMULATED_LATENCY that with_demo_latency exports)."""
    for name in list(os.environ):
        if name.startswith("QUARTERDECK_") or name in ("ANTHROPIC_API_KEY", "POSTGRES_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("QUARTERDECK_SIMULATED_LATENCY", "placeholder")
    monkeypatch.delenv("QUARTERDECK_SIMULATED_LATENCY")
    return monkeypatch


def test_up_gives_an_unset_simulated_latency_the_demo_default(bare_env: pytest.MonkeyPatch):
    settings = load_settings()
    assert settings.simulated_latency == "0"  # the setting's own default is unchanged
    demo = with_demo_latency(settings)
    assert demo.simulated_latency == DEMO_LATENCY
    assert demo.latency_profile.median == 1.0
    # Exported, so the worker processes `up` starts get it too.
    assert os.environ["QUARTERDECK_SIMULATED_LATENCY"] == DEMO_LATENCY


@pytest.mark.parametrize(
    ("env", "update"),
    [
        ({"QUARTERDECK_SIMULATED_LATENCY": "0"}, {}),  # benchmarks and tests say so
        ({}, {"env": "production"}),  # a production deployment is never a demo
        ({"ANTHROPIC_API_KEY": "sk-ant-test"}, {}),  # a real provider has its own latency
    ],
    ids=["explicit-0", "production", "real-provider"],
)
def test_up_keeps_latency_it_was_given_or_does_not_need(
    bare_env: pytest.MonkeyPatch, env: dict[str, str], update: dict[str, str]
):
    for name, value in env.items():
        bare_env.setenv(name, value)
    settings = load_settings().model_copy(update=update)
    assert with_demo_latency(settings) is settings
    assert os.environ.get("QUARTERDECK_SIMULATED_LATENCY") == env.get(
        "QUARTERDECK_SIMULATED_LATENCY"
    )


# -- which log format, and what the server says when ready -----------------------------------


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_log_format_auto_follows_the_terminal():
    assert wants_console("auto", _Stream(True)) is True  # type: ignore[arg-type]
    assert wants_console("auto", _Stream(False)) is False  # type: ignore[arg-type]
    assert wants_console("json", _Stream(True)) is False  # type: ignore[arg-type]
    assert wants_console("console", _Stream(False)) is True  # type: ignore[arg-type]


def test_ready_info_from_the_settings_and_this_host(bare_env: pytest.MonkeyPatch):
    bare_env.setenv("QUARTERDECK_HTTP_HOST", "0.0.0.0")
    bare_env.setenv("QUARTERDECK_HTTP_PORT", "8181")
    settings = with_demo_latency(load_settings())
    info = ready_info(settings, api=True, workers=True)
    assert info.api_url == "http://localhost:8181"
    assert info.metrics_url == "http://localhost:9090/metrics"
    assert info.provider == "simulated" and info.simulated_latency == DEMO_LATENCY
    assert info.auth is False and info.postgres == "embedded (.data/pg)"
    assert (info.isolation is None) != (info.isolation_problem is None)  # one or the other
    assert info.isolation in {None, "bwrap", "unshare", "rlimits"}
    worker = ready_info(settings.model_copy(update={"metrics_port": 0}), api=False, workers=True)
    assert worker.api_url is None and worker.metrics_url is None
