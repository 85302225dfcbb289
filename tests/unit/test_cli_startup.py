"""The ``quarterdeck`` command starts without the server's stack.

``quarterdeck version`` used to take 1.2 s here because every sub-command module, and the package
``__init__`` above it, imported FastAPI, asyncpg, Redis, the gateway and the chaos runner at
import time. These tests check the property that keeps it fast, in fresh interpreters (a module
imported once stays in ``sys.modules``, so an in-process check would see earlier tests' imports):
the commands a person types most import none of the heavy modules. No timing assertions.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

# What a client command must never load: the web stack, the database driver, the providers'
# SDKs and the composition root (which imports everything).
HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "asyncpg",
    "anthropic",
    "openai",
    "redis",
    "pgqueuer",
    "quarterdeck.runtime",
    "quarterdeck.app",
    "quarterdeck.providers",
)
# What commands that never read settings or make a request need not load either.
SETTINGS_AND_HTTP = ("pydantic_settings", "quarterdeck.config.settings", "httpx", "structlog")

# Runs ``quarterdeck ARGS`` in this interpreter and writes the modules loaded by the end to a file
# (atexit runs after typer's sys.exit).
_PROBE = """
import atexit, json, sys
out, *args = sys.argv[1:]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["quarterdeck", *args]
from quarterdeck.cli import main
main()
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARTERDECK_")}
    env.update(extra)
    return env


def _modules(tmp_path: Path, *args: str, **env: str) -> tuple[set[str], str, int]:
    """The modules ``quarterdeck ARGS`` loaded, its output, and its exit code."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return set(json.loads(out.read_text())), done.stdout + done.stderr, done.returncode


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_importing_the_cli_loads_no_server_stack() -> None:
    code = "import json, sys, quarterdeck.cli; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(json.loads(done.stdout))
    assert "quarterdeck.runs.cli" in modules  # the sub-apps are mounted, not deferred
    assert _loaded(modules, HEAVY) == []
    assert _loaded(modules, SETTINGS_AND_HTTP) == []


@pytest.mark.parametrize(
    ("args", "shows"),
    [
        (("version",), "0."),
        (("--help",), "Submit, inspect, follow and cancel agent runs"),
        (("run", "list", "--help"), "List runs, newest first"),
        (("keys", "--help"), "Create a key and print it"),
    ],
)
def test_version_and_help_load_no_server_stack(
    tmp_path: Path, args: tuple[str, ...], shows: str
) -> None:
    modules, output, code = _modules(tmp_path, *args, COLUMNS="200")
    assert code == 0, output
    assert shows in output
    assert _loaded(modules, HEAVY) == []
    assert _loaded(modules, SETTINGS_AND_HTTP) == []


def test_run_list_makes_its_request_without_the_server_stack(tmp_path: Path) -> None:
    """``run list`` is one HTTP GET: it loads the HTTP client and nothing of the server. Nothing
    listens on the port, so the request is really made and fails the way the CLI says."""
    url = f"http://127.0.0.1:{free_port()}"
    modules, output, code = _modules(tmp_path, "run", "list", QUARTERDECK_URL=url)
    assert code == 1, output
    assert f"cannot reach Quarterdeck at {url}" in " ".join(output.split())
    assert "httpx" in modules  # the request was attempted
    assert _loaded(modules, HEAVY) == []


def test_config_option_still_reaches_commands_that_read_settings(tmp_path: Path) -> None:
    """The root ``--config`` is handed to the settings module only when given (or once that
    module is loaded), so it must still be what a settings-reading command sees."""
    config = tmp_path / "quarterdeck.yaml"
    config.write_text("db_pool_min: 9\ndb_pool_max: 2\n")
    _, output, code = _modules(tmp_path, "--config", str(config), "db", "upgrade")
    assert code == 2, output
    assert "QUARTERDECK_DB_POOL_MIN" in output


LAZY_PACKAGES = (
    "quarterdeck.chaos",
    "quarterdeck.gateway",
    "quarterdeck.incidents",
    "quarterdeck.security.audit",
    "quarterdeck.security.auth",
    "quarterdeck.security.policy",
)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_packages_keep_their_public_names(package: str) -> None:
    """Every re-exported name still resolves, to the object its module defines; an unknown name
    is an AttributeError (which is also what lets ``from package import submodule`` work)."""
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        home = getattr(value, "__module__", None)
        if home is not None and home.startswith(package):
            assert getattr(importlib.import_module(home), name) is value
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018
    assert importlib.import_module(f"{package}.cli") is not None


def test_chaos_help_names_every_scenario() -> None:
    """``chaos run --help`` lists the scenarios without importing them; the list must stay the
    suite's own."""
    from quarterdeck.chaos.cli import SCENARIO_NAMES
    from quarterdeck.chaos.scenarios import SCENARIOS

    assert SCENARIO_NAMES == tuple(SCENARIOS)
