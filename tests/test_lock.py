"""The lock is the only source of installed versions.

A venv built from uv.lock alone runs the CLI and regenerates generated/ byte for
byte, on each Python the project supports; a pyproject.toml edited without
`make lock` stops `make` with a message that says so; and the versions of what
runs beside the hub are stated once, in tools/versions.env.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from support import unavailable
from support.versions import VERSIONS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_protos  # noqa: E402


def _uv() -> str:
    for candidate in (ROOT / ".build" / "uv" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    unavailable("uv is not installed; `make uv` installs it from tools/uv-requirements.txt")
    raise AssertionError("unreachable")


def _python(minor: int) -> str | None:
    """An interpreter for 3.<minor> that really runs (pyenv shims may not)."""
    candidates = [shutil.which(f"python3.{minor}")]
    candidates += sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3"))
    )
    candidates += [f"/usr/bin/python3.{minor}", f"/usr/local/bin/python3.{minor}"]
    for path in candidates:
        if not path or not Path(path).is_file():
            continue
        probe = subprocess.run(
            [path, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == f"(3, {minor})":
            return path
    return None


def _uv_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


@pytest.mark.parametrize("minor", [11, 12])
def test_a_venv_from_the_lock_alone_runs_the_cli_and_regenerates_identical_code(
    minor: int, tmp_path: Path
) -> None:
    python = _python(minor)
    if python is None:
        unavailable(f"no Python 3.{minor} interpreter on this machine")
    venv = tmp_path / "venv"
    synced = subprocess.run(
        [_uv(), "sync", "--frozen", "--extra", "dev", "--python", str(python)],
        cwd=ROOT,
        env=_uv_env(venv),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert synced.returncode == 0, synced.stderr
    assert "Resolved" not in synced.stderr, "a frozen sync must not resolve"

    version = subprocess.run(
        [venv / "bin" / "python", "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == f"(3, {minor})"

    helped = subprocess.run(
        [venv / "bin" / "cimhub", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout

    out = tmp_path / "generated"
    gen = subprocess.run(
        [venv / "bin" / "python", ROOT / "scripts" / "gen_protos.py", "--out", out],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert gen.returncode == 0, gen.stderr
    assert sorted(p.name for p in out.iterdir()) == ["SOURCES", "cim"]
    assert gen_protos.tree_differences(out, ROOT / "generated") == []


def test_the_generator_versions_recorded_in_generated_are_the_locked_ones() -> None:
    locked = {
        package["name"]: package["version"]
        for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    }
    recorded = gen_protos.parse_sources((ROOT / "generated" / "SOURCES").read_text())
    for name in gen_protos.GENERATOR_PACKAGES:
        assert recorded[f"package {name}"] == locked[name], name


def test_check_generated_names_the_input_that_moved() -> None:
    recorded = gen_protos.parse_sources((ROOT / "generated" / "SOURCES").read_text())
    moved = dict(recorded)
    moved["package grpcio-tools"] = "9.9.9"
    proto = next(key for key in recorded if key.startswith("proto "))
    moved[proto] = "sha256:0"
    reasons = gen_protos.explain(recorded, moved)
    assert f"uv.lock changed: grpcio-tools {recorded['package grpcio-tools']} -> 9.9.9" in reasons
    assert f"proto/ changed: {proto.removeprefix('proto ')} was edited" in reasons
    assert gen_protos.explain(recorded, recorded) == []


def _repo_copy(tmp_path: Path) -> Path:
    """The files `make lock-check` reads, beside a link to the installed uv."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for rel in ("Makefile", "pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(ROOT / rel, copy / rel)
    shutil.copytree(ROOT / "tools", copy / "tools", ignore=shutil.ignore_patterns("node_modules"))
    uv = Path(_uv())
    (copy / ".build" / "uv" / "bin").mkdir(parents=True)
    (copy / ".build" / "uv" / "bin" / "uv").symlink_to(uv)
    return copy


def _make_lock_check(copy: Path) -> subprocess.CompletedProcess[str]:
    # -o: the linked uv counts as up to date, so make never rebuilds it here.
    return subprocess.run(
        ["make", "--no-print-directory", "-o", ".build/uv/bin/uv", "lock-check"],
        cwd=copy,
        env=_uv_env(copy / ".venv"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_stops_with_a_clear_message_when_pyproject_moves_without_the_lock(
    tmp_path: Path,
) -> None:
    copy = _repo_copy(tmp_path)
    agreed = _make_lock_check(copy)
    assert agreed.returncode == 0, agreed.stderr

    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    edited = text.replace('"pyjwt>=2.9,<3",', '"pyjwt>=2.9,<3",\n  "six>=1.16",', 1)
    assert edited != text
    pyproject.write_text(edited)
    refused = _make_lock_check(copy)
    assert refused.returncode != 0
    assert "ERROR: uv.lock does not match pyproject.toml." in refused.stderr
    assert "Run 'make lock'" in refused.stderr


def test_versions_of_what_runs_beside_the_hub_are_stated_once() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert froms == [VERSIONS["NODE_IMAGE"], VERSIONS["PYTHON_IMAGE"]]
    for image in froms:
        assert re.search(r":\d+\.\d+\.\d+-", image), f"{image} is not pinned to a version"

    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"image: postgres:{VERSIONS['PG_MAJOR']}\n" in compose
    assert f"image: redis:{VERSIONS['REDIS_MAJOR']}\n" in compose
    assert f"image: prom/prometheus:v{VERSIONS['PROMETHEUS_VERSION']}\n" in compose
    assert "include tools/versions.env" in (ROOT / "Makefile").read_text()


def test_node_tools_are_pinned_by_the_committed_lock() -> None:
    node = ROOT / "tools" / "node"
    manifest = json.loads((node / "package.json").read_text())
    lock = json.loads((node / "package-lock.json").read_text())
    for name, wanted in manifest["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", wanted), f"{name} {wanted} is a range"
        entry = lock["packages"][f"node_modules/{name}"]
        assert entry["version"] == wanted
        assert entry["integrity"].startswith("sha512-")


def test_uv_itself_is_pinned_with_hashes_and_matches_pyproject() -> None:
    requirements = (ROOT / "tools" / "uv-requirements.txt").read_text()
    pinned = re.search(r"^uv==(\S+)", requirements, flags=re.M)
    assert pinned is not None
    assert "--hash=sha256:" in requirements
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["uv"]["required-version"] == f"=={pinned.group(1)}"
