"""Kill the server with accepted work outstanding; nothing accepted may be lost."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from sqlalchemy import func, select

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from server.domain.status import TERMINAL
from server.storage.db import make_engine
from server.storage.schema import messages
from support.hub import AUTH_ENV, authed_channel

ACCEPTED = 2000
LEASE_MS = 5000


async def _start(db_url: str, channels_file: Path) -> tuple[asyncio.subprocess.Process, int]:
    env = {
        **os.environ,
        **AUTH_ENV,
        "CIMHUB_DATABASE_URL": db_url,
        "CIMHUB_CHANNELS_FILE": str(channels_file),
        "CIMHUB_DISPATCH_LEASE_MS": str(LEASE_MS),
        "CIMHUB_SANDBOX_DELIVERY_DELAY": "0.02",
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
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "server exited before it was ready"
            found = re.search(r"gRPC on [^:]+:(\d+)", line)
            if found:
                return proc, int(found.group(1))


async def _count(db_url: str) -> tuple[int, int, int]:
    """(messages, in a terminal status, claimed but not finished)."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
            terminal = (
                await conn.execute(
                    select(func.count()).where(messages.c.status.in_([s.value for s in TERMINAL]))
                )
            ).scalar_one()
            claimed = (
                await conn.execute(
                    select(func.count()).where(messages.c.dispatch_state == "CLAIMED")
                )
            ).scalar_one()
        return total, terminal, claimed
    finally:
        await engine.dispose()


async def test_sigkill_with_accepted_work_loses_nothing(db_url: str, tmp_path: Path) -> None:
    sent_log = tmp_path / "provider-sent.log"
    channels = tmp_path / "channels.toml"
    channels.write_text(
        "[[channels]]\n"
        'id = "sms-main"\n'
        'type = "SMS"\n'
        'provider = "sandbox"\n'
        'lane = "CNNECT"\n'
        f'sent_log = "{sent_log}"\n'
    )
    proc, port = await _start(db_url, channels)
    accepted: set[str] = set()
    try:
        async with authed_channel(f"127.0.0.1:{port}") as channel:
            stub = mg.MessagingServiceStub(channel)
            for batch in range(ACCEPTED // 1000):
                request = m.SendBatchRequest(
                    channel="sms",
                    from_address="CNNECT",
                    to=[m.BatchDestination(msisdn=[f"+447911{batch}{i:05d}" for i in range(1000)])],
                    content=m.BatchContent(type="text", text="crash test"),
                )
                reply = await stub.SendBatch(request)
                accepted.update(r.message_id for r in reply.results if r.message_id)
        # Kill while the dispatcher is working through the backlog.
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len(accepted) == ACCEPTED

    total, terminal_at_kill, in_flight = await _count(db_url)
    assert total == ACCEPTED  # every acknowledged message was durable
    sent_before = len(sent_log.read_text().splitlines()) if sent_log.exists() else 0

    proc, _ = await _start(db_url, channels)
    try:
        async with asyncio.timeout(120):
            while (await _count(db_url))[1] < ACCEPTED:  # noqa: ASYNC110 - state is in the database
                await asyncio.sleep(0.25)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()

    lines = sent_log.read_text().splitlines()
    at_provider = [line.split(" ", 1)[1] for line in lines]
    duplicates = len(at_provider) - len(set(at_provider))
    print(
        f"\naccepted={ACCEPTED} sent_before_kill={sent_before} terminal_at_kill={terminal_at_kill} "
        f"in_flight_at_kill={in_flight} provider_sends={len(at_provider)} duplicates={duplicates}"
    )
    assert set(at_provider) == accepted
    assert duplicates <= in_flight
    assert (await _count(db_url))[1] == ACCEPTED
