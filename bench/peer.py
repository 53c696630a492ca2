"""K1: the hub beside Kannel, the SMS gateway users would otherwise run.

Both sides take the same fixed number of SMS submissions over HTTP from the
same C load generator (wrk with bench/wrk_fixed.lua) at the same concurrency,
and each delivers over loopback to a fake provider:

- Kannel 1.4.5 (Debian's `kannel`): bearerbox with its store file (so an
  accepted message survives a restart, as the hub's do), smsbox's sendsms HTTP
  interface, and `fakesmsc` (Debian's `kannel-extras`) as the SMSC.
- The hub: POST /api/v1/message/send on the REST façade, through the Twilio
  adapter to bench/fake_sms.py.

Accepted: wrk's 2xx answers over its wall time. Delivered end to end: from
the first submission to the moment the fake provider holds every accepted
message. The bench installs the Debian packages when they are missing and it
runs as root; otherwise it says what to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from common import BENCH, BenchError, log

KANNEL_BIN = Path("/usr/sbin")
FAKESMSC = Path("/usr/lib/kannel/test/fakesmsc")
PACKAGES = ("kannel", "kannel-extras", "wrk")
KANNEL_USER = "bench"
KANNEL_SECRET = "bench-secret"
WRK_THREADS = 2


def missing_tools() -> list[str]:
    found = {
        "kannel": (KANNEL_BIN / "bearerbox").exists() and (KANNEL_BIN / "smsbox").exists(),
        "kannel-extras": FAKESMSC.exists(),
        "wrk": shutil.which("wrk") is not None,
    }
    return [name for name, ok in found.items() if not ok]


async def ensure_tools() -> None:
    missing = missing_tools()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(f"K1 needs Debian's {' '.join(missing)}: apt-get install them")
    log(f"K1: installing {' '.join(missing)} from Debian's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {err.decode(errors='replace')[-300:]}")
    if missing_tools():
        raise BenchError(f"K1: still missing after apt-get: {' '.join(missing_tools())}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Load:
    requests: int
    ok: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def wrk(url: str, count: int, concurrency: int, env: dict[str, str]) -> Load:
    """A fixed-count wrk run, timed from the start to the last thread's last answer.

    wrk's own clock covers its whole -d window, so -d is only an upper bound:
    the script prints a line as each thread finishes, and SIGINT ends the wait.
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t", str(WRK_THREADS), "-c", str(concurrency), "-d", "600s",
        "--timeout", "30s", "-s", str(BENCH / "wrk_fixed.lua"), url,
        env={**os.environ, **env, "BENCH_COUNT": str(count), "BENCH_THREADS": str(WRK_THREADS)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    finished = 0
    seconds = 0.0
    lines: list[str] = []
    while raw := await proc.stdout.readline():
        line = raw.decode(errors="replace").strip()
        if line == "thread-done":
            finished += 1
            if finished == WRK_THREADS:
                seconds = time.monotonic() - started
                proc.send_signal(signal.SIGINT)
        elif line.startswith("{"):
            lines.append(line)
        elif line.startswith("refused: "):
            log(f"  wrk: {line}")
    err = await proc.stderr.read()
    await proc.wait()
    if not lines or finished < WRK_THREADS:
        raise BenchError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')[-300:]}")
    doc = json.loads(lines[-1])
    return Load(
        requests=int(doc["requests"]),
        ok=int(doc["ok"]),
        errors=int(doc["errors"]),
        seconds=seconds,
        p50_ms=doc["p50_us"] / 1e3,
        p99_ms=doc["p99_us"] / 1e3,
    )


async def until(count_now: Any, expected: int, seconds: float) -> tuple[int, float]:
    """Poll until the provider holds `expected`; the time it got there (wall clock)."""
    deadline = time.monotonic() + seconds
    got = await count_now()
    while got < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        got = await count_now()
    return got, time.time()


@dataclass
class Side:
    load: Load
    delivered: int
    e2e_seconds: float

    @property
    def delivered_rate(self) -> float:
        # Requests still in flight when wrk stopped may arrive too; only those
        # whose acceptance was seen are counted.
        done = min(self.delivered, self.load.ok)
        return done / self.e2e_seconds if self.e2e_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.load.requests,
            "accepted": self.load.ok,
            "errors": self.load.errors,
            "accept_rate": round(self.load.rate, 1),
            "p50_ms": round(self.load.p50_ms, 2),
            "p99_ms": round(self.load.p99_ms, 2),
            "delivered": self.delivered,
            "delivered_rate": round(self.delivered_rate, 1),
        }


def kannel_conf(tmp: Path, ports: dict[str, int]) -> Path:
    conf = tmp / "kannel.conf"
    conf.write_text(
        f"""group = core
admin-port = {ports["admin"]}
admin-password = {KANNEL_SECRET}
smsbox-port = {ports["smsbox"]}
box-allow-ip = 127.0.0.1
log-level = 3
log-file = "{tmp / "bearerbox.log"}"
store-type = file
store-location = "{tmp / "kannel.store"}"

group = smsc
smsc = fake
smsc-id = FAKE
port = {ports["smsc"]}
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {ports["sendsms"]}
log-level = 3
log-file = "{tmp / "smsbox.log"}"

group = sendsms-user
username = {KANNEL_USER}
password = {KANNEL_SECRET}

group = sms-service
keyword = default
text = "no service"
"""
    )
    return conf


@contextlib.asynccontextmanager
async def kannel(tmp: Path) -> Any:
    """bearerbox, fakesmsc and smsbox; yields the sendsms URL and the fakesmsc log."""
    ports = {name: free_port() for name in ("admin", "smsbox", "smsc", "sendsms")}
    conf = kannel_conf(tmp, ports)
    smsc_out = tmp / "fakesmsc.out"
    procs: list[asyncio.subprocess.Process] = []

    async def start(argv: list[str], out: Path) -> None:
        with out.open("wb") as f:
            procs.append(await asyncio.create_subprocess_exec(*argv, stdout=f, stderr=f))

    try:
        await start([str(KANNEL_BIN / "bearerbox"), "-v", "3", str(conf)], tmp / "bb.out")
        await wait_port(ports["smsc"])
        # -m 0: the fake SMSC originates nothing; it only logs what it is sent.
        await start(
            [str(FAKESMSC), "-H", "127.0.0.1", "-r", str(ports["smsc"]), "-m", "0", "1 2 text x"],
            smsc_out,
        )
        await start([str(KANNEL_BIN / "smsbox"), "-v", "3", str(conf)], tmp / "sb.out")
        await wait_port(ports["sendsms"])
        url = f"http://127.0.0.1:{ports['sendsms']}"
        await warm_kannel(url, smsc_out)
        yield url, smsc_out
    finally:
        for proc in reversed(procs):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def wait_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f}s")


def delivered_lines(path: Path) -> int:
    with path.open("rb") as f:
        return f.read().count(b"Got message")


async def warm_kannel(url: str, smsc_out: Path) -> None:
    """One message end to end, so the SMSC link is up before the clock starts."""
    query = f"username={KANNEL_USER}&password={KANNEL_SECRET}&from=1&to=2&text=warm"
    async with (
        aiohttp.ClientSession(trust_env=False) as http,
        http.get(f"{url}/cgi-bin/sendsms?{query}") as resp,
    ):
        if resp.status >= 300:
            raise BenchError(f"Kannel refused the warm-up send: {resp.status}")

    async def count() -> int:
        return delivered_lines(smsc_out)

    got, _ = await until(count, 1, 30)
    if got < 1:
        raise BenchError("Kannel's warm-up message never reached fakesmsc")


async def kannel_side(tmp: Path, count: int, concurrency: int, drain: float) -> Side:
    async with kannel(tmp) as (url, smsc_out):
        before = delivered_lines(smsc_out)

        async def delivered() -> int:
            return delivered_lines(smsc_out) - before

        env = {"BENCH_TARGET": "kannel", "BENCH_USER": KANNEL_USER, "BENCH_SECRET": KANNEL_SECRET}
        started = time.time()
        load = await wrk(url, count, concurrency, env)
        got, at = await until(delivered, load.ok, drain)
        return Side(load, got, at - started)


async def hub_side(
    hub_http: str, fake_url: str, channel: str, auth: tuple[str, str], count: int,
    concurrency: int, drain: float,
) -> Side:  # fmt: skip
    async with aiohttp.ClientSession(trust_env=False) as http:
        await http.post(fake_url + "/bench/reset")

        async def delivered() -> int:
            async with http.get(fake_url + "/bench/count") as resp:
                return int((await resp.json())["count"])

        env = {
            "BENCH_TARGET": "hub", "BENCH_CHANNEL": channel,
            "BENCH_USER": auth[0], "BENCH_SECRET": auth[1],
        }  # fmt: skip
        started = time.time()
        load = await wrk(hub_http, count, concurrency, env)
        got, at = await until(delivered, load.ok, drain)
        return Side(load, got, at - started)
