"""Kill the server with accepted work outstanding; nothing accepted may be lost."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from server.domain.models import OutboundDraft
from server.domain.status import TERMINAL
from server.storage.claims import NO_OUTCOME
from server.storage.db import make_engine
from server.storage.message_schema import attempts, messages
from server.storage.store import SqlStore
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


async def _count(db_url: str) -> tuple[int, int, int, int]:
    """(messages, in a terminal status, claimed but not finished, of those started)."""
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
            # Started with no outcome: the only ones the provider may have seen.
            started = (
                await conn.execute(
                    select(func.count()).where(
                        messages.c.dispatch_state == "CLAIMED",
                        messages.c.attempt_started_at.is_not(None),
                    )
                )
            ).scalar_one()
        return total, terminal, claimed, started
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
        # Kill while the dispatcher is working through the backlog, with sends
        # at the provider.
        async with asyncio.timeout(30):
            while (await _count(db_url))[3] == 0:  # noqa: ASYNC110 - state is in the database
                await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len(accepted) == ACCEPTED

    total, terminal_at_kill, in_flight, started_at_kill = await _count(db_url)
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
    twice = {i for i, n in Counter(at_provider).items() if n > 1}
    flagged = await _flagged_as_possible_duplicates(db_url)
    print(
        f"\naccepted={ACCEPTED} sent_before_kill={sent_before} terminal_at_kill={terminal_at_kill} "
        f"in_flight_at_kill={in_flight} started_without_outcome_at_kill={started_at_kill} "
        f"provider_sends={len(at_provider)} duplicates={duplicates} flagged={len(flagged)}"
    )
    assert set(at_provider) == accepted
    assert duplicates <= in_flight
    # Only a send that had started can have reached the provider before the kill.
    assert duplicates <= started_at_kill <= in_flight
    # Every message sent twice says so in its attempt log.
    assert twice <= flagged
    assert len(flagged) == started_at_kill
    assert (await _count(db_url))[1] == ACCEPTED


async def _flagged_as_possible_duplicates(db_url: str) -> set[str]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(attempts.c.message_id).where(attempts.c.error_code == NO_OUTCOME)
            )
            return set(rows.scalars())
    finally:
        await engine.dispose()


def _draft(n: int) -> OutboundDraft:
    return OutboundDraft(
        channel_id="sandbox",
        destination=f"+44770090{n:04d}",
        type="text",
        text="hi",
        content={"text": {"body": "hi"}},
        conversation_id="c0ffee00-0000-0000-0000-000000000001",
    )


async def test_recovery_sends_unstarted_claims_at_once_and_started_ones_after_the_lease(
    db_url: str,
) -> None:
    clock = [1_800_000_000_000]
    lease = 60_000
    before = await SqlStore.open(db_url, lambda _events: None, clock=lambda: clock[0])
    after: SqlStore | None = None
    try:
        made = await before.messages.accept(
            "t1", [_draft(i) for i in range(3)], None, lambda _m: b""
        )
        ids = [m.id for m in made.messages]
        claimed = {d.message_id: d for d in await before.outbox.claim_due(10, lease)}
        assert set(claimed) == set(ids)
        started, unstarted = ids[0], ids[1:]
        assert await before.outbox.start_attempt(claimed[started], "sandbox")

        # A second process comes up a moment later, while the first one's claims are out.
        clock[0] += 1_000
        after = await SqlStore.open(db_url, lambda _events: None, clock=lambda: clock[0])
        retaken = {d.message_id: d for d in await after.outbox.claim_due(10, lease)}
        # The provider never saw these: no lease to wait out, and no extra attempt.
        assert set(retaken) == set(unstarted)
        assert all(d.attempt == 1 for d in retaken.values())
        # One start per claim: whoever starts first sends, the other must not.
        assert await after.outbox.start_attempt(retaken[unstarted[0]], "sandbox")
        assert not await before.outbox.start_attempt(claimed[unstarted[0]], "sandbox")
        assert not await before.outbox.start_attempt(claimed[started], "sandbox")

        # The started one may be at the provider: only its lease brings it back.
        clock[0] += lease - 1_000 - 1
        assert await after.outbox.claim_due(10, lease) == []
        clock[0] += 2
        again = await after.outbox.claim_due(10, lease)
        assert [d.message_id for d in again] == [started]
        assert again[0].attempt == 2
        log = (await after.messages.get_message("t1", started)).attempt_log
        assert [(a.outcome, a.error_code, a.provider) for a in log] == [
            ("FAILED", NO_OUTCOME, "sandbox")
        ]
        assert "may be a duplicate" in log[0].reason
        # The first holder's claim of it is fenced off too.
        assert not await before.outbox.start_attempt(claimed[started], "sandbox")
        assert await after.outbox.start_attempt(again[0], "sandbox")
    finally:
        await before.close()
        if after is not None:
            await after.close()
