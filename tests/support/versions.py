"""The versions of PostgreSQL, Redis and the base images, from tools/versions.env."""

from __future__ import annotations

from pathlib import Path

VERSIONS_FILE = Path(__file__).resolve().parents[2] / "tools" / "versions.env"


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """NAME=value lines; blank lines and # comments are skipped."""
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not NAME=value: {line!r}")
        versions[name.strip()] = value.strip()
    return versions


VERSIONS = read_versions()
PG_MAJOR = int(VERSIONS["PG_MAJOR"])
REDIS_MAJOR = int(VERSIONS["REDIS_MAJOR"])
