"""Several server processes on one PostgreSQL, live events fanned out through Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from server.api.convert import decode_cursor
from support.postgres import PostgresServer
from support.replicas import (
    METADATA,
    Replica,
    channel,
    logged_events,
    outbox_counts,
    replicas,
    sandbox_channels,
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


class Collector:
    """A live subscriber: every change it receives, as (conversation, sequence), in order."""

    def __init__(self, replica: Replica) -> None:
        self._channel = channel(replica)
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
                        m.BatchDestination(msisdn=[f"+447911{tag}{b}{i:04d}" for i in range(size)])
                    ],
                    content=m.BatchContent(type="text", text="scale-out"),
                ),
                metadata=METADATA,
            )
            accepted.update(r.message_id for r in reply.results if r.message_id)
    return accepted


async def test_a_subscriber_on_b_receives_what_a_commits_in_order(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    channels = sandbox_channels(tmp_path / "channels.toml", tmp_path / "sent.log")
    env = {"CIMHUB_REDIS_URL": redis_url}
    async with replicas(pg_url, channels, 2, env) as (a, b), Collector(b) as on_b:
        accepted = await send_batches(a, 1, "1", size=200)

        async def settled() -> bool:
            if (await outbox_counts(pg_url)).terminal < len(accepted):
                return False
            return on_b.last >= (await logged_events(pg_url))[1]

        await wait_until(settled, 60)
        log, _last = await logged_events(pg_url)
    print(
        f"\nsent_via_a={len(accepted)} events_in_log={len(log)}"
        f" received_on_b={len(on_b.changes)} gaps={on_b.gaps(log)}"
        f" duplicates={on_b.duplicates()}"
    )
    assert len(accepted) == 200
    assert on_b.cursors == sorted(set(on_b.cursors))
    assert on_b.changes == log  # every event, once, in cursor order
