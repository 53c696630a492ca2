"""Regenerate generated/ from proto/, or check that generated/ is up to date.

This is the only writer of generated/. It copies the google/api and google/rpc
protos out of the installed googleapis-common-protos into .build/protos (ignored
by git) so that protoc and buf resolve imports without a remote registry.

Its output is a function of two inputs: the .proto files and the versions of the
generator packages, which come from uv.lock. generated/SOURCES records both, so
`--check` can say which one moved when the output differs.

    python scripts/gen_protos.py            # rewrite generated/
    python scripts/gen_protos.py --check    # generate elsewhere, compare, explain
    python scripts/gen_protos.py --out DIR  # write into DIR instead
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "generated"
THIRD_PARTY = ROOT / ".build" / "protos"
SOURCES_FILE = "SOURCES"
# The packages whose versions decide what the generator writes.
GENERATOR_PACKAGES = ("grpcio-tools", "protobuf", "mypy-protobuf", "googleapis-common-protos")


def vendor_google_protos() -> Path:
    # google is a namespace package, so locate it through a module inside it.
    from google.api import annotations_pb2

    site = Path(annotations_pb2.__file__).resolve().parent.parent.parent
    if THIRD_PARTY.exists():
        shutil.rmtree(THIRD_PARTY)
    for sub in ("google/api", "google/rpc"):
        dest = THIRD_PARTY / sub
        dest.mkdir(parents=True)
        for proto in sorted((site / sub).glob("*.proto")):
            shutil.copy2(proto, dest / proto.name)
    return THIRD_PARTY


def well_known_include() -> Path:
    import grpc_tools

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def proto_files() -> list[str]:
    return sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))


def current_sources() -> dict[str, str]:
    """What the output depends on: each generator package's version, each proto's hash."""
    sources = {f"package {name}": metadata.version(name) for name in GENERATOR_PACKAGES}
    for rel in proto_files():
        digest = hashlib.sha256((PROTO_DIR / rel).read_bytes()).hexdigest()
        sources[f"proto {rel}"] = f"sha256:{digest}"
    return sources


def render_sources(sources: dict[str, str]) -> str:
    lines = [
        "# Written by scripts/gen_protos.py: the inputs generated/ was made from.",
        "# Package versions come from uv.lock; never edit this file by hand.",
    ]
    lines += [f"{key} = {value}" for key, value in sources.items()]
    return "\n".join(lines) + "\n"


def parse_sources(text: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" = ")
        parsed[key] = value
    return parsed


def generate(out_dir: Path) -> None:
    vendored = vendor_google_protos()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{vendored}",
        f"-I{well_known_include()}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *proto_files(),
    ]
    # mypy-protobuf reports every file it writes; show its output only on failure.
    done = subprocess.run(cmd, cwd=PROTO_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"protoc failed with exit status {done.returncode}")
    # Packages need an __init__ so setuptools maps generated/cim as `cim`.
    for directory in [p for p in out_dir.rglob("*") if p.is_dir()]:
        (directory / "__init__.py").touch()
        (directory / "py.typed").touch()
    (out_dir / SOURCES_FILE).write_text(render_sources(current_sources()))


def tree_differences(expected: Path, actual: Path) -> list[str]:
    """Relative paths that are missing, extra or different in `actual`."""

    def files(root: Path) -> set[str]:
        if not root.exists():
            return set()
        return {
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    want, have = files(expected), files(actual)
    diffs = [f"missing  {rel}" for rel in sorted(want - have)]
    diffs += [f"extra    {rel}" for rel in sorted(have - want)]
    diffs += [
        f"differs  {rel}"
        for rel in sorted(want & have)
        if not filecmp.cmp(expected / rel, actual / rel, shallow=False)
    ]
    return diffs


def explain(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """Which inputs moved since generated/ was written."""
    reasons = []
    for key in sorted(set(recorded) | set(now)):
        before, after = recorded.get(key), now.get(key)
        if before == after:
            continue
        kind, _, name = key.partition(" ")
        if kind == "package":
            reasons.append(f"uv.lock changed: {name} {before} -> {after}")
        elif before is None:
            reasons.append(f"proto/ changed: {name} is new")
        elif after is None:
            reasons.append(f"proto/ changed: {name} was removed")
        else:
            reasons.append(f"proto/ changed: {name} was edited")
    return reasons


def check() -> int:
    with tempfile.TemporaryDirectory(prefix="cimhub-gen-") as scratch:
        fresh = Path(scratch) / "generated"
        generate(fresh)
        diffs = tree_differences(fresh, OUT_DIR)
    if not diffs:
        print("generated/ is up to date")
        return 0
    sources = OUT_DIR / SOURCES_FILE
    recorded = parse_sources(sources.read_text()) if sources.exists() else {}
    reasons = explain(recorded, current_sources())
    if not recorded:
        reasons = [f"generated/{SOURCES_FILE} is missing, so its inputs are unknown"]
    elif not reasons:
        reasons = [
            "neither proto/ nor the generator versions changed: generated/ was edited by hand"
        ]
    print("ERROR: generated/ is stale:", file=sys.stderr)
    for reason in reasons:
        print(f"  {reason}", file=sys.stderr)
    for diff in diffs[:20]:
        print(f"    {diff}", file=sys.stderr)
    if len(diffs) > 20:
        print(f"    ... and {len(diffs) - 20} more", file=sys.stderr)
    print("Run 'make gen' and commit generated/ with the change that caused it.", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare instead of writing")
    mode.add_argument("--out", type=Path, help="write into this folder instead of generated/")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    generate(args.out or OUT_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
