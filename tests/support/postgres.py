"""A throwaway PostgreSQL cluster built from the machine's server binaries.

initdb refuses to run as root, so when the suite runs as root every server
binary is started through ``runuser -u postgres --`` inside a temp dir owned by
that user. The cluster runs with durability switched off (fsync, synchronous
commit, full page writes) because it only lives as long as the test session.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from . import free_port
from .versions import PG_MAJOR

T = TypeVar("T")

SERVICE_USER = "postgres"
ADMIN_DB = "postgres"
SESSION_DB = "cimhub"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or the postgres user) are missing."""


def find_bindir() -> Path:
    """Locate initdb/pg_ctl: $CIMHUB_PG_BINDIR, then the Debian PG 15 layout."""
    candidates = []
    if env := os.environ.get("CIMHUB_PG_BINDIR"):
        candidates.append(Path(env))
    candidates.append(Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + f"); install postgresql-{PG_MAJOR} (`make system-deps`) "
        "or set CIMHUB_PG_BINDIR"
    )


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in a helper thread.

    This keeps the caller's thread (and whatever event loop pytest-asyncio has
    installed there) untouched, so it is safe from sync fixtures and sync tests.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="pg-admin", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


class PostgresServer:
    """One PostgreSQL cluster on 127.0.0.1:<free port>, deleted on stop()."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.host = "127.0.0.1"
        self.port = 0
        self.user = SERVICE_USER
        self.tmpdir: Path | None = None
        self.startup_seconds = 0.0
        self._as_root = os.geteuid() == 0
        self._running = False
        self._options = ""

    # ------------------------------------------------------------------ paths
    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "postgres.log"

    # -------------------------------------------------------------- commands
    def _server_cmd(self, *argv: str) -> list[str]:
        if self._as_root:
            return ["runuser", "-u", SERVICE_USER, "--", *argv]
        return list(argv)

    def _run(self, *argv: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            self._server_cmd(*argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            log = ""
            if self.tmpdir is not None and self.logfile.exists():
                log = "\n--- postgres.log ---\n" + self.logfile.read_text(errors="replace")[-4000:]
            raise RuntimeError(
                f"{' '.join(argv[:2])} failed with exit code {proc.returncode}:\n"
                f"{proc.stdout[-4000:]}{log}"
            )

    # ------------------------------------------------------------- lifecycle
    def start(self) -> PostgresServer:
        if self._running:
            return self
        began = time.monotonic()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="cimhub-pg-"))
        if self._as_root:
            import pwd

            try:
                pw = pwd.getpwnam(SERVICE_USER)
            except KeyError:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                raise PostgresUnavailable(
                    f"running as root but there is no '{SERVICE_USER}' user to run "
                    f"PostgreSQL as; create it (`useradd --system --user-group "
                    f"{SERVICE_USER}`) or run `make system-deps`"
                ) from None
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.tmpdir, 0o755)
        atexit.register(self.stop)

        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.datadir),
            "-A", "trust",
            "-U", self.user,
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        options = " ".join(
            [
                f"-c listen_addresses={self.host}",
                "-p {port}",
                f"-k {self.tmpdir}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._options = options
        # A free port can be taken between probing and binding; retry a few times.
        for attempt in range(3):
            self.port = free_port()
            try:
                self._pg_ctl_start()
                break
            except RuntimeError:
                if attempt == 2:
                    self._cleanup_dir()
                    raise
        self._running = True
        _run_sync(self._execute(f'CREATE DATABASE "{SESSION_DB}"'))
        self.startup_seconds = time.monotonic() - began
        return self

    def _pg_ctl_start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D", str(self.datadir),
            "-l", str(self.logfile),
            "-w", "-t", "60",
            "-o", self._options.format(port=self.port),
            "start",
        )  # fmt: skip

    def halt(self) -> None:
        """Stop the server the way an operator would (fast shutdown), keeping its data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again on the same port and data."""
        self._pg_ctl_start()

    def freeze(self) -> None:
        """SIGSTOP the server and its backends: connections stay open, nothing
        answers, as with a frozen host or a network partition."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(self._processes()):
            os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        """The postmaster first (so it forks no new backend), then its children."""
        postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                # The command name may hold spaces and parentheses; the fields
                # after its closing parenthesis are state, then the parent pid.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def stop(self) -> None:
        if self._running:
            self._running = False
            # The process may already be gone; the temp dir goes either way.
            with contextlib.suppress(Exception):
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.datadir),
                    "-m", "immediate", "-w", "stop",
                )  # fmt: skip
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------- URLs
    def dsn(self, database: str = SESSION_DB) -> str:
        """A libpq/asyncpg DSN (no SQLAlchemy driver suffix)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def url(self, database: str = SESSION_DB) -> str:
        """A SQLAlchemy URL using the asyncpg driver."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    # -------------------------------------------------------- per-test databases
    async def _execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn(ADMIN_DB))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database_async(self) -> str:
        """Create an empty database ``t_<uuid>`` and return its name."""
        name = f"t_{uuid.uuid4().hex}"
        await self._execute(f'CREATE DATABASE "{name}"')
        return name

    async def drop_database_async(self, name: str) -> None:
        # FORCE terminates connections a test forgot to close (PostgreSQL 13+).
        await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def create_database(self) -> str:
        """Sync wrapper of create_database_async, safe inside pytest-asyncio."""
        return _run_sync(self.create_database_async())

    def drop_database(self, name: str) -> None:
        _run_sync(self.drop_database_async(name))
