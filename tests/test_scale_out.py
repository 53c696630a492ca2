"""Several server processes on one PostgreSQL, live events fanned out through Redis.

Where a test must show that Redis, not a re-read of the log, carried the
events, the subscriber's replica runs in this process so its bus's catch-up
count can be read; the other replica is a separate process as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path

import aiohttp
import grpc
import pytest
from sqlalchemy import func, select

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from server.api.convert import decode_cursor
from server.app import Hub
from server.config import Settings
from server.events.redis_bus import RedisBus
from server.storage.db import make_engine
from server.storage.message_schema import messages
from support.clock import eventually
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.replicas import (
    API_ID,
    API_KEY,
    METADATA,
    Replica,
    attempt_times,
    channel,
    claim_counts,
    claimed_with_lease_before,
    logged_events,
    outbox_counts,
    replicas,
    sandbox_channels,
    start_replica,
    wait_until,
)

pytestmark = pytest.mark.postgresql


@pytest.fixture
async def pg_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    name = await postgres_server.create_database_async()
    try:
        yield postgres_server.url(name)
    finally:
        await postgres_server.drop_database_async(name)


@contextlib.asynccontextmanager
async def replica_in_process(
    db_url: str, channels_file: Path, env: Mapping[str, str]
) -> AsyncIterator[Hub]:
    """A replica like start_replica's, run in this process so its event bus can be watched."""
    settings = Settings.from_env(
        {
            **os.environ,
            "CIMHUB_DATABASE_URL": db_url,
            "CIMHUB_CHANNELS_FILE": str(channels_file),
            "CIMHUB_BOOTSTRAP_API_ID": API_ID,
            "CIMHUB_BOOTSTRAP_API_KEY": API_KEY,
            "CIMHUB_SANDBOX_DELIVERY_DELAY": "0.01",
            "CIMHUB_HEARTBEAT_SECONDS": "1",
            **env,
        }
    )
    hub = await Hub.start(replace(settings, host="127.0.0.1", grpc_port=0, http_port=0))
    try:
        yield hub
    finally:
        # Bounded, so a stop that hangs fails the test where it hangs.
        async with asyncio.timeout(60):
            await hub.stop(grace=1)


def catch_ups(hub: Hub) -> int:
    """How often the hub's subscribers were sent to re-read the log for a broken chain."""
    assert isinstance(hub.bus, RedisBus)
    return hub.bus.catch_ups


class Collector:
    """A live subscriber: every change it receives, as (conversation, sequence), in order."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self.changes: list[tuple[str, int]] = []
        self.cursors: list[int] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self._task
        await self._channel.close()

    async def _run(self) -> None:
        stub = ng.NotificationServiceStub(self._channel)
        call = stub.StreamNotifications(n.StreamNotificationsRequest(), metadata=METADATA)
        async for item in call:
            if item.HasField("heartbeat"):
                self.ready.set()
                continue
            cursor = decode_cursor(item.cursor)
            assert cursor is not None
            self.cursors.append(cursor)
            self.changes.extend(
                (c.conversation_id, c.sequence) for c in item.notification.body.changes
            )

    @property
    def last(self) -> int:
        return self.cursors[-1] if self.cursors else 0

    def duplicates(self) -> int:
        return len(self.changes) - len(set(self.changes))

    def gaps(self, log: list[tuple[str, int]]) -> int:
        return len(set(log) - set(self.changes))


async def send_batches(replica: Replica, batches: int, tag: str, size: int = 1000) -> set[str]:
    accepted: set[str] = set()
    async with channel(replica) as ch:
        stub = mg.MessagingServiceStub(ch)
        for b in range(batches):
            reply = await stub.SendBatch(
                m.SendBatchRequest(
                    channel="sms",
                    from_address="CNNECT",
                    to=[
                        m.BatchDestination(msisdn=[f"+447400{tag}{b}{i:04d}" for i in range(size)])
                    ],
                    content=m.BatchContent(type="text", text="scale-out"),
                ),
                metadata=METADATA,
                timeout=120,
            )
            accepted.update(r.message_id for r in reply.results if r.message_id)
    return accepted


async def delivered_to(pg_url: str, accepted: int, subscriber: Collector) -> None:
    """Wait until every accepted message is final and the subscriber has the whole log."""

    async def settled() -> bool:
        if (await outbox_counts(pg_url)).terminal < accepted:
            return False
        return subscriber.last >= (await logged_events(pg_url))[1]

    await wait_until(settled, 60)


async def test_a_subscriber_on_b_receives_what_a_commits_in_order_through_redis(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    channels = sandbox_channels(tmp_path / "channels.toml", tmp_path / "sent.log")
    env = {"CIMHUB_REDIS_URL": redis_url}
    async with (
        replicas(pg_url, channels, 1, env) as (a,),
        replica_in_process(pg_url, channels, env) as b,
        Collector(f"127.0.0.1:{b.grpc_port}") as on_b,
    ):
        # The first entry B reads has nothing before it to chain to: that one
        # catch-up from the log is expected; after it, Redis carries everything.
        warm_up = await send_batches(a, 1, "0", size=1)
        await delivered_to(pg_url, len(warm_up), on_b)
        before = catch_ups(b)
        accepted = await send_batches(a, 1, "1", size=200)
        await delivered_to(pg_url, len(warm_up) + len(accepted), on_b)
        re_reads = catch_ups(b) - before
        log, _last = await logged_events(pg_url)
    print(
        f"\nsent_via_a={len(accepted)} events_in_log={len(log)}"
        f" received_on_b={len(on_b.changes)} gaps={on_b.gaps(log)}"
        f" duplicates={on_b.duplicates()} catch_ups_after_warm_up={re_reads}"
    )
    assert len(accepted) == 200
    assert on_b.cursors == sorted(set(on_b.cursors))
    assert on_b.changes == log  # every event, once, in cursor order
    assert re_reads == 0, "events reached B by re-reading the log, not through Redis"


def provider_sends(sent_log: Path) -> list[str]:
    """Message ids in the order the fake provider took them."""
    if not sent_log.exists():
        return []
    return [line.split(" ", 1)[1] for line in sent_log.read_text().splitlines() if " " in line]


async def test_killed_replica_leaves_nothing_undone(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    sent_log = tmp_path / "sent.log"
    channels = sandbox_channels(tmp_path / "channels.toml", sent_log)
    # A's leases are short, B's long: at the kill, A's claims are the ones
    # ending within A's lease, so "A's in-flight" can be counted exactly.
    a_lease, b_lease = 3_000, 120_000
    base = {"CIMHUB_REDIS_URL": redis_url}
    a = await start_replica(pg_url, channels, {**base, "CIMHUB_DISPATCH_LEASE_MS": str(a_lease)})
    b = await start_replica(pg_url, channels, {**base, "CIMHUB_DISPATCH_LEASE_MS": str(b_lease)})
    restarted: Replica | None = None
    try:
        accepted = await send_batches(a, 5, "2")

        async def a_is_dispatching() -> bool:
            soon = int(time.time() * 1000) + a_lease + 1
            return await claimed_with_lease_before(pg_url, soon) > 0

        # Kill A while it holds claims, mid-dispatch.
        await wait_until(a_is_dispatching, 30, interval=0.01)
        a.kill()
        killed_at = int(time.time() * 1000)
        await a.proc.wait()
        sent_before_kill = len(provider_sends(sent_log))
        a_in_flight = await claimed_with_lease_before(pg_url, killed_at + a_lease + 1)
        a_started = await started_with_lease_before(pg_url, killed_at + a_lease + 1)
        at_kill = await outbox_counts(pg_url)
        # Counted first: A's short leases lapse soon after the kill. The
        # survivor stays live and ready, its database still there.
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz"):
                async with http.get(f"http://127.0.0.1:{b.http_port}{path}") as resp:
                    assert resp.status == 200, path

        async def dispatched() -> bool:
            counts = await outbox_counts(pg_url)
            return counts.pending == 0 and counts.claimed == 0

        await wait_until(dispatched, 90)  # B alone finishes, A's claims once their lease ends
        # The provider still owes the receipts of what A sent; it re-sends them
        # when A comes back (the sandbox replays its log at start).
        restarted = await start_replica(
            pg_url, channels, {**base, "CIMHUB_DISPATCH_LEASE_MS": str(a_lease)}
        )

        async def all_terminal() -> bool:
            return (await outbox_counts(pg_url)).terminal >= len(accepted)

        await wait_until(all_terminal, 60)
        final = await outbox_counts(pg_url)
    finally:
        for replica in (a, b, restarted):
            if replica is not None:
                replica.kill()
                await replica.proc.wait()
    sends = provider_sends(sent_log)
    duplicates = len(sends) - len(set(sends))
    print(
        f"\naccepted={len(accepted)} sent_before_kill={sent_before_kill}"
        f" a_in_flight_at_kill={a_in_flight} a_started_without_outcome_at_kill={a_started}"
        f" claimed_at_kill_both={at_kill.claimed}"
        f" provider_sends={len(sends)} duplicates={duplicates} terminal={final.terminal}"
    )
    assert len(accepted) == 5000
    assert final.total == final.terminal == len(accepted)
    assert set(sends) == accepted
    assert duplicates <= a_in_flight
    # Only what A had started can have reached the provider twice.
    assert duplicates <= a_started


async def started_with_lease_before(db_url: str, until_ms: int) -> int:
    """Claimed deliveries whose lease ends by until_ms and whose send had started."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            query = select(func.count()).where(
                messages.c.dispatch_state == "CLAIMED",
                messages.c.lease_until <= until_ms,
                messages.c.attempt_started_at.is_not(None),
            )
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def test_redis_restart_mid_stream_leaves_no_gap_and_no_duplicate(
    pg_url: str, redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    channels = sandbox_channels(tmp_path / "channels.toml", tmp_path / "sent.log")
    env = {"CIMHUB_REDIS_URL": redis_url}
    async with (
        replicas(pg_url, channels, 1, env) as (a,),
        replica_in_process(pg_url, channels, env) as b,
        Collector(f"127.0.0.1:{b.grpc_port}") as on_b,
    ):
        accepted = await send_batches(a, 1, "0", size=100)
        await delivered_to(pg_url, len(accepted), on_b)  # past the first entry's catch-up
        healthy = catch_ups(b)
        for round_ in range(1, 3):
            accepted |= await send_batches(a, 1, str(round_), size=100)
        await delivered_to(pg_url, len(accepted), on_b)
        while_healthy = catch_ups(b) - healthy
        received_before = len(on_b.changes)
        await asyncio.to_thread(redis_server.restart)
        for round_ in range(3, 6):
            accepted |= await send_batches(a, 1, str(round_), size=100)
        await delivered_to(pg_url, len(accepted), on_b)
        # Those may all have come from the log, which B reads while its
        # reader is away; once it is back, what follows comes through Redis,
        # and the first entry has nothing to chain to.
        bus = b.bus
        assert isinstance(bus, RedisBus)
        await eventually(lambda: bus.connected)
        accepted |= await send_batches(a, 1, "6", size=100)
        await delivered_to(pg_url, len(accepted), on_b)
        after_the_cut = catch_ups(b) - healthy - while_healthy
        log, _last = await logged_events(pg_url)
    print(
        f"\nsent={len(accepted)} events_in_log={len(log)} received_before_restart={received_before}"
        f" received={len(on_b.changes)} gaps={on_b.gaps(log)} duplicates={on_b.duplicates()}"
        f" catch_ups_while_healthy={while_healthy} catch_ups_after_restart={after_the_cut}"
    )
    assert on_b.changes == log
    assert while_healthy == 0, "events reached B by re-reading the log, not through Redis"
    assert after_the_cut >= 1, "the restart broke the chain, so B must have read the log"


async def test_four_workers_on_two_replicas_never_claim_twice(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    sent_log = tmp_path / "sent.log"
    channels = sandbox_channels(tmp_path / "channels.toml", sent_log)
    env = {"CIMHUB_REDIS_URL": redis_url, "CIMHUB_DISPATCH_WORKERS": "2"}
    async with replicas(pg_url, channels, 2, env) as (a, b):
        sent = await asyncio.gather(send_batches(a, 5, "4"), send_batches(b, 5, "5"))
        accepted = sent[0] | sent[1]

        async def dispatched() -> bool:
            counts = await outbox_counts(pg_url)
            return counts.pending == 0 and counts.claimed == 0

        await wait_until(dispatched, 120)
        claims = await claim_counts(pg_url)
    sends = provider_sends(sent_log)
    per_message = Counter(sends)
    double = sum(1 for c in per_message.values() if c > 1)
    print(
        f"\nworkers=2x2 accepted={len(accepted)} provider_sends={len(sends)}"
        f" double_claims_at_provider={double} claims_per_message={sorted(set(claims))}"
    )
    assert len(accepted) == 10_000
    assert set(sends) == accepted
    assert double == 0
    assert set(claims) == {1}


async def test_a_channels_tps_holds_across_replicas(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    tps, per_replica = 10, 10
    # A small bound per replica, so both replicas send side by side.
    channels = sandbox_channels(
        tmp_path / "channels.toml", tmp_path / "sent.log", max_in_flight=2, tps=tps
    )
    async with replicas(pg_url, channels, 2, {"CIMHUB_REDIS_URL": redis_url}) as (a, b):
        await asyncio.gather(
            send_batches(a, 1, "6", size=per_replica), send_batches(b, 1, "7", size=per_replica)
        )

        async def dispatched() -> bool:
            counts = await outbox_counts(pg_url)
            return counts.pending == 0 and counts.claimed == 0

        await wait_until(dispatched, 60)
        times = await attempt_times(pg_url)
    span = (times[-1] - times[0]) / 1000
    needed = (len(times) - 1) / tps
    print(f"\nreplicas=2 tps={tps} sends={len(times)} span={span:.2f}s at_least={needed:.2f}s")
    assert len(times) == 2 * per_replica
    # Each replica pacing alone would have taken about half as long.
    assert span >= needed * 0.8
