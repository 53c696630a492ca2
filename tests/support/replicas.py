"""Real `python -m server` replicas as child processes, for scale-out tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from sqlalchemy import func, select

from server.domain.status import TERMINAL
from server.storage.conversation_schema import events
from server.storage.db import make_engine
from server.storage.message_schema import attempts, messages

API_ID = "test-app"
API_KEY = "scaleout-test-key-0123456789abcdefghijklmno"  # 43 characters
METADATA = (("x-api-id", API_ID), ("x-api-key", API_KEY))


@dataclass
class Replica:
    proc: asyncio.subprocess.Process
    grpc_port: int
    http_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def sandbox_channels(
    path: Path,
    sent_log: Path,
    channel_id: str = "sms-main",
    max_in_flight: int = 256,
    tps: int = 0,
) -> Path:
    """A channels file with one fast sandbox SMS channel that logs every send."""
    path.write_text(
        "[[channels]]\n"
        f'id = "{channel_id}"\n'
        'type = "SMS"\n'
        'provider = "sandbox"\n'
        'lane = "CNNECT"\n'
        f'sent_log = "{sent_log}"\n'
        f"max_in_flight = {max_in_flight}\n"
        f"tps = {tps}\n"
    )
    return path


async def start_replica(
    db_url: str, channels_file: Path, env: Mapping[str, str] | None = None
) -> Replica:
    full_env = {
        **os.environ,
        "CIMHUB_DATABASE_URL": db_url,
        "CIMHUB_CHANNELS_FILE": str(channels_file),
        "CIMHUB_BOOTSTRAP_API_ID": API_ID,
        "CIMHUB_BOOTSTRAP_API_KEY": API_KEY,
        "CIMHUB_SANDBOX_DELIVERY_DELAY": "0.01",
        "CIMHUB_HEARTBEAT_SECONDS": "1",
        **(env or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--log-level",
        "WARNING",
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=None if os.environ.get("CIMHUB_TEST_REPLICA_LOGS") else asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "server exited before it was ready"
            found = re.search(r"gRPC on [^:]+:(\d+), HTTP on [^:]+:(\d+)", line)
            if found:
                return Replica(proc, int(found.group(1)), int(found.group(2)))


@asynccontextmanager
async def replicas(
    db_url: str, channels_file: Path, count: int, env: Mapping[str, str] | None = None
) -> AsyncIterator[list[Replica]]:
    started: list[Replica] = []
    try:
        # One at a time: the first applies the migrations.
        for _ in range(count):
            started.append(await start_replica(db_url, channels_file, env))
        yield started
    finally:
        for replica in started:
            replica.kill()
        for replica in started:
            await replica.proc.wait()


def channel(replica: Replica) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(replica.target)


@dataclass(frozen=True)
class OutboxCounts:
    total: int
    terminal: int
    claimed: int
    pending: int


async def outbox_counts(db_url: str) -> OutboxCounts:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:

            async def count(*where: object) -> int:
                query = select(func.count()).select_from(messages)
                return int((await conn.execute(query.where(*where))).scalar_one())  # type: ignore[arg-type]

            return OutboxCounts(
                total=await count(),
                terminal=await count(messages.c.status.in_([s.value for s in TERMINAL])),
                claimed=await count(messages.c.dispatch_state == "CLAIMED"),
                pending=await count(messages.c.dispatch_state == "PENDING"),
            )
    finally:
        await engine.dispose()


async def logged_events(db_url: str) -> tuple[list[tuple[str, int]], int]:
    """Every event in the log as (conversation, sequence) in cursor order, and the last cursor."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(events.c.id, events.c.conversation_id, events.c.sequence).order_by(
                        events.c.id
                    )
                )
            ).all()
            return [(r[1], int(r[2])) for r in rows], int(rows[-1][0]) if rows else 0
    finally:
        await engine.dispose()


async def claimed_with_lease_before(db_url: str, until_ms: int) -> int:
    """Claimed deliveries whose lease ends by until_ms."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            query = select(func.count()).where(
                messages.c.dispatch_state == "CLAIMED", messages.c.lease_until <= until_ms
            )
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def attempt_times(db_url: str) -> list[int]:
    """When each provider attempt was recorded (ms), in order."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(attempts.c.ts).order_by(attempts.c.ts))
            return [int(r[0]) for r in rows]
    finally:
        await engine.dispose()


async def claim_counts(db_url: str) -> list[int]:
    """How many times each message was claimed (attempts counts claims)."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            return [int(r[0]) for r in await conn.execute(select(messages.c.attempts))]
    finally:
        await engine.dispose()


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], seconds: float, interval: float = 0.25
) -> None:
    """Poll an async predicate (state lives in another process or the database)."""
    async with asyncio.timeout(seconds):
        while not await predicate():  # noqa: ASYNC110 - the state is in another process
            await asyncio.sleep(interval)
