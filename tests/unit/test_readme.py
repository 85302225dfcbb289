"""The README must stay true: every setting and every CLI command it promises exists, and back."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from quarterdeck.cli import app
from quarterdeck.config import env_names

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme():
    missing = [name for name in env_names().values() if f"`{name}`" not in README]
    assert missing == []


def test_every_documented_setting_exists():
    documented = set(
        re.findall(r"`((?:QUARTERDECK|POSTGRES|REDIS|ANTHROPIC|LOG)_[A-Z_]+)`", README)
    )
    known = set(env_names().values()) | {
        "QUARTERDECK_CONFIG",
        "QUARTERDECK_URL",
        "QUARTERDECK_API_KEY",
    }
    assert documented - known == set()


def test_documented_cli_commands_exist():
    root = get_command(app)
    for line in re.findall(r"^quarterdeck ([a-z\- ]+)", README, re.MULTILINE):
        words = line.split()
        cmd = root
        for word in words:
            sub = getattr(cmd, "commands", {}).get(word)
            if sub is None:
                break
            cmd = sub
        assert cmd is not root, f"README mentions unknown command: quarterdeck {line}"
