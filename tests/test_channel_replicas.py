"""A channel created, changed or deleted on one replica is applied on every other,
and no replica claims the messages of a channel it has not loaded."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from cim.v1 import config_service_pb2 as cfg
from cim.v1 import config_service_pb2_grpc as cfg_grpc
from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from server.domain.models import Channel, OutboundDraft
from server.domain.sending import conversation_for
from server.domain.status import DeliveryStatus
from support.hub import channel_to, running_hub
from support.postgres import PostgresServer
from support.replicas import METADATA, Replica, channel, replicas, sandbox_channels, wait_until

# One send at a time: a replica claims two ahead, and leaves the rest due
# where the other replica's claims could take them.
TENANT_CHANNEL = cfg.Channel(
    channel_id="t-sms", contact_type="SMS", provider="sandbox", max_in_flight=1
)


@pytest.fixture
async def pg_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    name = await postgres_server.create_database_async()
    try:
        yield postgres_server.url(name)
    finally:
        await postgres_server.drop_database_async(name)


def _send(channel_id: str, n: int) -> m.SendMessageRequest:
    return m.SendMessageRequest(
        channel_id=channel_id,
        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
        to=o.OutboundContact(phone=f"+4479111{n:05d}"),
        text=o.OutboundText(body=f"replica {n}"),
    )


async def _knows(replica: Replica, channel_id: str) -> bool:
    async with channel(replica) as ch:
        try:
            await cfg_grpc.ConfigServiceStub(ch).GetChannel(
                cfg.GetChannelRequest(channel_id=channel_id), metadata=METADATA
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
    return True


async def _statuses(replica: Replica, ids: list[str]) -> Counter[str]:
    async with channel(replica) as ch:
        stub = mg.MessagingServiceStub(ch)
        found: Counter[str] = Counter()
        for message_id in ids:
            got = await stub.GetMessage(
                m.GetMessageRequest(message_id=message_id), metadata=METADATA
            )
            found[d.DeliveryStatus.Name(got.message.status)] += 1
        return found


async def _send_many(replica: Replica, channel_id: str, count: int) -> list[str]:
    async with channel(replica) as ch:
        stub = mg.MessagingServiceStub(ch)
        replies = await asyncio.gather(
            *(stub.SendMessage(_send(channel_id, i), metadata=METADATA) for i in range(count))
        )
    return [r.message_id for r in replies]


async def _all_final(replica: Replica, ids: list[str]) -> Counter[str]:
    final = {"DELIVERY_STATUS_DELIVERED", "DELIVERY_STATUS_FAILED", "DELIVERY_STATUS_EXPIRED"}
    found: Counter[str] = Counter()

    async def done() -> bool:
        nonlocal found
        found = await _statuses(replica, ids)
        return sum(found[s] for s in final) == len(ids)

    await wait_until(done, 30)
    return found


@pytest.mark.postgresql
async def test_a_channel_made_on_a_serves_through_b_and_deleting_it_on_b_stops_a(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    files = sandbox_channels(tmp_path / "channels.toml", tmp_path / "sent.log")
    # Polls far apart: news that arrives in time came through Redis.
    env = {"CIMHUB_REDIS_URL": redis_url, "CIMHUB_CHANNEL_SYNC_SECONDS": "600"}
    async with replicas(pg_url, files, 2, env) as (a, b):
        async with channel(a) as ch:
            made = await cfg_grpc.ConfigServiceStub(ch).CreateChannel(
                cfg.CreateChannelRequest(channel=TENANT_CHANNEL), metadata=METADATA
            )
        assert made.channel.state == cfg.CHANNEL_STATE_SERVING

        # Sent through A at once, whether or not B has heard yet: none fails.
        through_a = await _send_many(a, "t-sms", 40)
        await wait_until(lambda: _knows(b, "t-sms"), 10)
        through_b = await _send_many(b, "t-sms", 1)
        found = await _all_final(a, through_a + through_b)
        print(f"\nthrough A and B on a channel made on A: {dict(found)}")
        assert found == Counter({"DELIVERY_STATUS_DELIVERED": 41})

        async with channel(b) as ch:
            await cfg_grpc.ConfigServiceStub(ch).DeleteChannel(
                cfg.DeleteChannelRequest(channel_id="t-sms"), metadata=METADATA
            )

        async def a_refuses() -> bool:
            async with channel(a) as ch:
                try:
                    await mg.MessagingServiceStub(ch).SendMessage(
                        _send("t-sms", 99), metadata=METADATA
                    )
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                    return True
            return False

        await wait_until(a_refuses, 10)
        assert not await _knows(a, "t-sms")


@pytest.mark.postgresql
async def test_without_redis_replicas_learn_of_channels_by_polling(
    pg_url: str, tmp_path: Path
) -> None:
    files = sandbox_channels(tmp_path / "channels.toml", tmp_path / "sent.log")
    env = {"CIMHUB_CHANNEL_SYNC_SECONDS": "0.5"}
    async with replicas(pg_url, files, 2, env) as (a, b):
        async with channel(a) as ch:
            await cfg_grpc.ConfigServiceStub(ch).CreateChannel(
                cfg.CreateChannelRequest(channel=TENANT_CHANNEL), metadata=METADATA
            )
        await wait_until(lambda: _knows(b, "t-sms"), 10)
        found = await _all_final(b, await _send_many(b, "t-sms", 5))
        assert found == Counter({"DELIVERY_STATUS_DELIVERED": 5})

        async with channel(b) as ch:
            await cfg_grpc.ConfigServiceStub(ch).DeleteChannel(
                cfg.DeleteChannelRequest(channel_id="t-sms"), metadata=METADATA
            )

        async def a_forgot() -> bool:
            return not await _knows(a, "t-sms")

        await wait_until(a_forgot, 10)


@pytest.mark.postgresql
async def test_a_replica_that_has_not_heard_of_a_channel_leaves_its_messages(
    pg_url: str, tmp_path: Path
) -> None:
    files = sandbox_channels(tmp_path / "channels.toml", tmp_path / "sent.log")
    # No Redis and a poll far off: B does not learn of the channel during the test.
    env = {"CIMHUB_CHANNEL_SYNC_SECONDS": "600"}
    async with replicas(pg_url, files, 2, env) as (a, b):
        async with channel(a) as ch:
            await cfg_grpc.ConfigServiceStub(ch).CreateChannel(
                cfg.CreateChannelRequest(channel=TENANT_CHANNEL), metadata=METADATA
            )
        ids = await _send_many(a, "t-sms", 40)
        found = await _all_final(a, ids)
        print(f"\n40 through A while B has not loaded the channel: {dict(found)}")
        assert not await _knows(b, "t-sms")
        assert found == Counter({"DELIVERY_STATUS_DELIVERED": 40})


async def test_a_message_on_a_channel_not_loaded_here_waits_for_one_that_has_it(
    db_url: str,
) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as ch:
        stub = mg.MessagingServiceStub(ch)
        phone = "+447700900555"
        # Accepted by a replica that has the channel; this one has not loaded it.
        draft = OutboundDraft(
            channel_id="elsewhere",
            destination=phone,
            type="TEXT",
            text="hi",
            content={"text": "hi"},
            conversation_id=conversation_for("default", "elsewhere", phone),
        )
        accepted = await hub.store.messages.accept("default", [draft], None, lambda _created: b"")
        waiting = accepted.messages[0].id
        hub.dispatcher.wake()
        # A later message on a loaded channel is claimed after it would have been.
        later = await stub.SendMessage(_send("sandbox", 1))

        async def delivered(message_id: str) -> bool:
            got = await stub.GetMessage(m.GetMessageRequest(message_id=message_id))
            return got.message.status == d.DELIVERY_STATUS_DELIVERED

        await wait_until(lambda: delivered(later.message_id), 10, interval=0.02)
        left = await hub.store.messages.get_message("default", waiting)
        assert left.status == DeliveryStatus.ACCEPTED

        # Once this replica has the channel, the message goes.
        await hub.channels.load(Channel("elsewhere", "SMS", "sandbox", sandbox=True), "default")
        await wait_until(lambda: delivered(waiting), 10, interval=0.02)
