"""Every module and package of server/ has a place in the layers contract.

import-linter checks only the modules a contract names: a new module at the
root of server/ left out of "The server's layers" could import anything.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"


def _layered() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["name"] == "The server's layers"]
    return {name.strip() for layer in layers for name in layer.split("|")}


def _top_level() -> set[str]:
    """server.<name> for each module and package directly under server/."""
    modules = {f"server.{p.stem}" for p in SERVER.glob("*.py") if p.name != "__init__.py"}
    packages = {f"server.{p.name}" for p in SERVER.iterdir() if (p / "__init__.py").is_file()}
    return modules | packages


def test_every_module_of_server_is_in_the_layers_contract() -> None:
    missing = _top_level() - _layered()
    assert not missing, f"add these to the layers contract in pyproject.toml: {sorted(missing)}"


def test_the_layers_contract_names_only_modules_that_exist() -> None:
    stale = {name for name in _layered() if name.startswith("server.")} - _top_level()
    assert not stale, f"the layers contract names modules that are gone: {sorted(stale)}"
