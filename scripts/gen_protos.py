"""Regenerate generated/ from proto/.

This is the only writer of generated/. It copies the google/api and google/rpc
protos out of the installed googleapis-common-protos into .build/protos (ignored
by git) so that protoc and buf resolve imports without a remote registry.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "generated"
THIRD_PARTY = ROOT / ".build" / "protos"


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


def main() -> int:
    vendored = vendor_google_protos()
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir()
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
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
        f"--python_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        f"--mypy_out={OUT_DIR}",
        f"--mypy_grpc_out={OUT_DIR}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_DIR)
    # Packages need an __init__ so setuptools maps generated/cim as `cim`.
    for directory in [p for p in OUT_DIR.rglob("*") if p.is_dir()]:
        (directory / "__init__.py").touch()
        (directory / "py.typed").touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
