"""A throwaway redis-server on 127.0.0.1:<free port>, no persistence.

Readiness and flushing use the raw RESP protocol over a socket, so this module
does not need the ``redis`` client package.
"""

from __future__ import annotations

import atexit
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import free_port
from .versions import REDIS_MAJOR


class RedisUnavailable(RuntimeError):
    """redis-server is not installed."""


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisUnavailable(
            "redis-server not found on PATH; install it (`make system-deps` or "
            "`apt-get install -y redis-server`)"
        )
    found = redis_major(path)
    if found != REDIS_MAJOR:
        raise RedisUnavailable(
            f"{path} is Redis {found}, but tools/versions.env names Redis {REDIS_MAJOR}"
        )
    return path


def redis_major(binary: str) -> int:
    """The major version `redis-server --version` reports ("... v=7.0.15 ...")."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"\bv=(\d+)\.", out.stdout)
    if match is None:
        raise RedisUnavailable(f"cannot read a version from {out.stdout.strip()!r}")
    return int(match.group(1))


def _command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one inline command and return the first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall((" ".join(args) + "\r\n").encode())
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.strip()


class RedisServer:
    """redis-server as a child process; restart() keeps the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = find_redis_server()
        self.host = "127.0.0.1"
        self.port = port or 0
        self.tmpdir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._atexit = False

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "redis.log"

    def _spawn(self) -> None:
        assert self.tmpdir is not None
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.tmpdir),
            "--logfile", str(self.logfile),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if _command(self.port, "PING") == b"+PONG":
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def _failure(self, what: str) -> RuntimeError:
        log = ""
        if self.tmpdir is not None and self.logfile.exists():
            log = "\n--- redis.log ---\n" + self.logfile.read_text(errors="replace")[-4000:]
        return RuntimeError(f"redis-server {what} on port {self.port}{log}")

    def start(self) -> RedisServer:
        if self.proc is not None:
            return self
        if self.tmpdir is None:
            self.tmpdir = Path(tempfile.mkdtemp(prefix="cimhub-redis-"))
        if not self._atexit:
            atexit.register(self.close)
            self._atexit = True
        fixed_port = self.port != 0
        error = self._failure("could not be started")
        for _attempt in range(3):
            if not fixed_port:
                self.port = free_port()
            self._spawn()
            if self._wait_ready():
                return self
            error = self._failure("did not become ready")
            self._kill()
            if fixed_port:
                break
        raise error

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """Stop the process; the port and temp dir are kept for start()."""
        self._kill()

    def restart(self) -> None:
        """Stop and start again on the same port (all data is lost)."""
        self._kill()
        # The port is free once the process has exited, but allow a short grace
        # period in case the kernel is slow to release it.
        deadline = time.monotonic() + 5
        while True:
            self._spawn()
            if self._wait_ready():
                return
            self._kill()
            if time.monotonic() > deadline:
                raise self._failure("did not come back after restart")
            time.sleep(0.1)

    def flushall(self) -> None:
        reply = _command(self.port, "FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def close(self) -> None:
        """Stop and delete the temp dir."""
        self._kill()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
