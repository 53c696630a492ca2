"""The Redis event bus and Redis-shared pacing, against a real redis-server."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from server.dispatch.redis_pacing import RedisPacer
from server.domain.events import CommittedEvents, EventType, NewEvent, StoredEvent
from server.events.redis_bus import RedisBus, RedisBusConfig, decode, encode
from support.redis import RedisServer


def _event(cursor: int, tenant: str = "t1") -> StoredEvent:
    return StoredEvent(
        cursor,
        tenant,
        cursor,
        1_700_000_000_000 + cursor,
        NewEvent(
            f"conv-{tenant}",
            EventType.DELIVERY_STATUS,
            message_id=f"m{cursor}",
            status="DELIVERED",
            data={"n": cursor, "nested": {"ok": True}},
        ),
    )


def _commit(first: int, last: int, after: int | None) -> CommittedEvents:
    return CommittedEvents([_event(c) for c in range(first, last + 1)], after)


def test_entries_round_trip() -> None:
    events = [_event(7), _event(8, "t2")]
    fields = {k.encode(): v.encode() for k, v in encode(events, 6).items()}
    assert decode(fields) == (6, events)


async def _started(redis_url: str, **overrides: float) -> RedisBus:
    bus = RedisBus(RedisBusConfig(redis_url, **overrides))  # type: ignore[arg-type]
    await bus.start()
    async with asyncio.timeout(5):
        while not bus.connected:  # noqa: ASYNC110 - set by the bus's own task
            await asyncio.sleep(0.01)
    return bus


async def _next(bus_sub: object, wait: float = 3.0) -> tuple[list[int], bool]:
    """(cursors delivered, whether a catch-up from the log was asked for)."""
    sub = bus_sub
    batch = await sub.next_batch(wait)  # type: ignore[attr-defined]
    return [e.cursor for e in batch], sub.take_behind()  # type: ignore[attr-defined]


async def test_chained_entries_are_delivered_live_and_a_break_asks_for_the_log(
    redis_url: str,
) -> None:
    bus = await _started(redis_url, reorder_wait=0.2)
    try:
        sub = bus.subscribe("t1", lambda _e: True)
        await _next(sub, 0.1)  # the catch-up every new reader starts with
        # The first entry has nothing to chain to: the log fills in before it.
        bus.publish(_commit(1, 2, 0))
        assert await _next(sub) == ([], True)
        bus.publish(_commit(3, 4, 2))
        assert await _next(sub) == ([3, 4], False)
        # 7..8 overtakes 5..6 (another replica's commit published later): held
        # back until 5..6 arrives, then both go out in cursor order.
        bus.publish(_commit(7, 8, 6))
        bus.publish(_commit(5, 6, 4))
        delivered: list[int] = []
        while len(delivered) < 4:
            cursors, behind = await _next(sub)
            assert not behind
            delivered += cursors
        assert delivered == [5, 6, 7, 8]
        # 9..10 is never published: 11..12 waits, then the log is asked.
        bus.publish(_commit(11, 12, 10))
        assert await _next(sub) == ([], True)
        catch_ups = bus.catch_ups
        # Events of other tenants chain too but are not offered here.
        bus.publish(CommittedEvents([_event(13, "t2")], 12))
        bus.publish(_commit(14, 14, 13))
        assert await _next(sub) == ([14], False)
        assert bus.catch_ups == catch_ups
        # An entry older than the chain (already read from the log) is dropped.
        bus.publish(_commit(9, 10, 8))
        assert await _next(sub, 0.5) == ([], False)
    finally:
        bus.shutdown()
        await bus.close()


async def test_without_redis_subscribers_read_the_log_until_it_is_back(
    redis_server: RedisServer, redis_url: str
) -> None:
    bus = await _started(redis_url, poll_interval=0.1, block_ms=200)
    try:
        sub = bus.subscribe("t1", lambda _e: True)
        await _next(sub, 0.1)
        bus.publish(_commit(1, 1, 0))
        assert await _next(sub) == ([], True)
        redis_server.stop()
        polls = 0
        async with asyncio.timeout(10):
            while polls < 3:
                _cursors, behind = await _next(sub)
                polls += behind
        assert not bus.connected
        await asyncio.to_thread(redis_server.start)
        async with asyncio.timeout(10):
            while not bus.connected:  # noqa: ASYNC110 - set by the bus's own task
                await asyncio.sleep(0.05)
        # Back on the stream: after one more catch-up, entries chain again.
        bus.publish(_commit(2, 2, 1))
        bus.publish(_commit(3, 3, 2))
        seen: list[int] = []
        async with asyncio.timeout(10):
            while 3 not in seen:
                cursors, _behind = await _next(sub)
                seen += cursors
        print(f"\npolls_while_down={polls} live_after_restart={seen}")
    finally:
        bus.shutdown()
        await bus.close()


async def test_two_replicas_share_one_channel_rate(redis_url: str) -> None:
    tps, per_replica = 20, 10
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        pacers = [RedisPacer(client, "sms-shared", tps) for client in clients]
        loop = asyncio.get_running_loop()
        sent: list[float] = []

        async def replica(pacer: RedisPacer) -> None:
            for _ in range(per_replica):
                await pacer.wait()
                sent.append(loop.time())

        await asyncio.gather(*(replica(p) for p in pacers))
    finally:
        for client in clients:
            await client.aclose()
    span = max(sent) - min(sent)
    needed = (len(sent) - 1) / tps
    print(f"\nsends={len(sent)} tps={tps} span={span:.2f}s at_least={needed:.2f}s")
    # Alone, each replica would have used its own 20 TPS: twice the rate.
    assert span >= needed * 0.95


async def test_an_unreadable_entry_sends_subscribers_to_the_log(redis_url: str) -> None:
    bus = await _started(redis_url)
    try:
        sub = bus.subscribe("t1", lambda _e: True)
        await _next(sub, 0.1)
        bus.publish(_commit(1, 1, 0))
        assert await _next(sub) == ([], True)
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.xadd("cimhub:events", {"after": "1", "events": "not json"})
        finally:
            await client.aclose()
        assert await _next(sub) == ([], True)
        # The reader is still running: the next entry is read (and, having
        # nothing to chain to, also sends subscribers to the log).
        bus.publish(_commit(2, 2, 1))
        assert await _next(sub) == ([], True)
        bus.publish(_commit(3, 3, 2))
        assert await _next(sub) == ([3], False)
    finally:
        bus.shutdown()
        await bus.close()
