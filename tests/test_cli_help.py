"""`cimhub --help` shows the commands in groups: the client commands, which need
a running hub, apart from the admin and database commands, which work on the
database directly."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from server.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLIENT = {"send", "tail", "sessions", "templates", "channels", "messages"}
ADMIN = {"tenants", "keys", "db"}


def _cimhub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=60
    )


def _groups(help_text: str) -> dict[str, list[str]]:
    """Heading -> the commands listed under it, from the help's command listing."""
    groups: dict[str, list[str]] = {}
    heading = ""
    for line in help_text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading = line.removesuffix(":")
            groups[heading] = []
        elif heading and (found := re.match(r"^  ([a-z][a-z-]*)\s{2,}\S", line)):
            groups[heading].append(found.group(1))
        elif not line:
            heading = ""
    return groups


def _accepted_commands() -> set[str]:
    """Every command the parser takes, from its refusal of an unknown one."""
    refused = _cimhub("no-such-command")
    assert refused.returncode == 2
    found = re.search(r"choose from (.*)\)", refused.stderr)
    assert found, refused.stderr
    return set(re.findall(r"'([^']+)'", found.group(1)))


def test_help_lists_client_commands_apart_from_admin_and_database_commands() -> None:
    shown = _cimhub("--help")
    assert shown.returncode == 0, shown.stderr
    groups = _groups(shown.stdout)
    client = [h for h, names in groups.items() if set(names) & CLIENT]
    admin = [h for h, names in groups.items() if set(names) & ADMIN]
    assert len(client) == 1 and len(admin) == 1, groups
    assert client != admin
    assert set(groups[client[0]]) == CLIENT
    assert "running hub" in client[0]
    assert set(groups[admin[0]]) == ADMIN
    assert "database" in admin[0]
    # Every command the parser takes is listed, under exactly one heading.
    listed = [name for names in groups.values() for name in names]
    assert sorted(listed) == sorted(_accepted_commands())
    assert "serve" in listed


def test_each_listed_command_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in sorted(CLIENT | ADMIN | {"serve"}):
        with pytest.raises(SystemExit) as stopped:
            main([name, "--help"])
        assert stopped.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: cimhub {name} "), name


def test_the_cimhub_script_runs_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["cimhub"].partition(":")
    script = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit) as stopped:
        script(["--help"])
    assert stopped.value.code == 0
    assert _groups(capsys.readouterr().out), "the script's help lists no command groups"
