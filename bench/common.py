"""Plumbing for bench/run.py: child processes, worker RPC, statistics, machine facts."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------ processes
@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    ready_line: str
    log_path: Path
    drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def address(self, marker: str = "listening on ") -> str:
        return self.ready_line.split(marker, 1)[1].split(",")[0].strip()


@dataclass
class Children:
    """Every process the bench starts; stop_all() ends them, politely then not."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    async def start(
        self,
        name: str,
        argv: list[str],
        ready_prefix: str,
        *,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as errfile:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=errfile,
                cwd=str(ROOT),
                env={**os.environ, **(env or {})},
                preexec_fn=_die_with_parent,
            )
        child = Child(name, proc, "", log_path)
        self.children.append(child)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(ready_timeout):
                while True:
                    raw = await proc.stdout.readline()
                    if not raw:
                        raise BenchError(f"{name} exited before it was ready; see {log_path}")
                    line = raw.decode(errors="replace").strip()
                    if line.startswith(ready_prefix):
                        child.ready_line = line
                        break
        except TimeoutError:
            raise BenchError(
                f"{name} was not ready within {ready_timeout:.0f}s; see {log_path}"
            ) from None
        # Nobody reads its stdout from here on; make sure it can never block on it.
        child.drain = asyncio.create_task(_drain(proc.stdout))
        return child

    async def stop(self, child: Child, grace: float = 8.0) -> None:
        proc = child.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if child in self.children:
            self.children.remove(child)

    async def stop_all(self) -> None:
        for child in list(reversed(self.children)):
            with contextlib.suppress(Exception):
                await self.stop(child)

    def kill_all_now(self) -> None:
        """Last resort (e.g. from atexit): SIGKILL whatever is still running."""
        for child in self.children:
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()


try:
    _PRCTL: Any = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the bench dies, even by SIGKILL (Linux).

    Loaded up front, so the forked child only makes the one call.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(65536):
            pass


class Worker:
    """A bench/loadgen.py process, driven one JSON command at a time."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    async def start(cls, name: str, children: Children) -> Worker:
        log_path = children.log_dir / f"{name}.log"
        with log_path.open("ab") as errfile:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(BENCH / "loadgen.py"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=errfile,
                cwd=str(ROOT),
                limit=1 << 26,
                preexec_fn=_die_with_parent,
            )
        children.children.append(Child(name, proc, "", log_path))
        return cls(name, proc, log_path)

    async def call(self, op: str, call_timeout: float = 120.0, **spec: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write((json.dumps({"op": op, **spec}) + "\n").encode())
            await self.proc.stdin.drain()
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), call_timeout)
            except TimeoutError:
                raise BenchError(f"{self.name}: {op} took more than {call_timeout:.0f}s") from None
        if not raw:
            raise BenchError(f"{self.name} exited; see {self.log_path}")
        reply = json.loads(raw)
        if not reply["ok"]:
            raise BenchError(f"{self.name}: {op} failed: {reply['error']}")
        return dict(reply["result"])


# ------------------------------------------------------------------- quiet CPU
async def quiesce(pids: Iterable[int], threshold: float = 12.0, max_wait: float = 45.0) -> float:
    """Wait until the given processes together use < threshold % CPU; returns seconds waited."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            p.cpu_percent(None)
            procs.append(p)
    began = time.monotonic()
    while time.monotonic() - began < max_wait:
        await asyncio.sleep(0.3)
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.cpu_percent(None)
        if total < threshold:
            break
    return time.monotonic() - began


class CpuMeter:
    """CPU used by a process (all threads) while the block runs, in % of one core."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.percent: float | None = None
        self.seconds: float | None = None  # CPU time used inside the block

    def _used(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    async def __aenter__(self) -> CpuMeter:
        self._start = (time.monotonic(), self._used())
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(psutil.Error):
            wall = time.monotonic() - self._start[0]
            self.seconds = self._used() - self._start[1]
            self.percent = 100.0 * self.seconds / max(1e-3, wall)


class RssSampler:
    """Samples a process's RSS every `interval` seconds; `peak` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def now(self) -> int:
        return int(self.proc.memory_info().rss)

    async def __aenter__(self) -> RssSampler:
        self.peak = self.now()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self.now())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.now())
            await asyncio.sleep(self.interval)


# ------------------------------------------------------------------ statistics
def summary(values: list[float], unit: str) -> dict[str, Any]:
    """Median, min and max of the runs, and the runs themselves."""
    clean = [v for v in values if v is not None]
    if not clean:
        return {"median": None, "min": None, "max": None, "runs": values, "unit": unit}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "runs": values,
        "unit": unit,
    }


def hist_merge(hists: Iterable[Mapping[str, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for h in hists:
        for k, v in h.items():
            merged[int(k)] = merged.get(int(k), 0) + int(v)
    return merged


def hist_percentile(
    hist: Mapping[int, int], q: float, missing: int = 0, missing_at: int = 0
) -> float:
    """The q-quantile of a 1 ms histogram; `missing` samples count as `missing_at` ms."""
    data = dict(hist)
    if missing > 0:
        data[missing_at] = data.get(missing_at, 0) + missing
    total = sum(data.values())
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for k in sorted(data):
        seen += data[k]
        if seen >= rank:
            return float(max(0, k))
    return float(max(data))


# ---------------------------------------------------------------- the machine
def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git("rev-parse", "HEAD"),
        # The bench measures the working tree, which may differ from the commit.
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_average_at_start": list(os.getloadavg()),
    }
