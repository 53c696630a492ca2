"""Fan-out of committed events across replicas through one Redis stream.

Every replica XADDs the events it commits and XREADs the stream to feed its
own subscribers, so a subscriber sees the events of every replica. Redis is
only the fast path. Each entry carries the highest cursor committed before its
events (``after``); commits take turns, so entries chain. When an entry does
not follow the last one seen (lost, reordered between replicas, trimmed, or
Redis restarted), every local subscriber is told to catch up from the event
log, which drops nothing and, by comparing cursors, repeats nothing. While
Redis is unreachable, subscribers poll the log instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.aio import cancel_and_wait, supervised
from server.domain.events import CommittedEvents, EventType, NewEvent, StoredEvent
from server.events.bus import EventFilter, InProcessBus, Subscription

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisBusConfig:
    url: str
    stream: str = "cimhub:events"
    # Approximate cap on the stream's length; readers that fall further behind
    # than this catch up from the event log.
    max_len: int = 100_000
    # How long an entry that arrived ahead of its predecessor waits for it
    # before the subscribers go to the log instead.
    reorder_wait: float = 0.05
    # While Redis is away: how often subscribers read the log.
    poll_interval: float = 0.5
    block_ms: int = 1_000
    # Entries waiting to be XADDed; beyond this they are dropped (readers catch up).
    max_pending: int = 10_000


def encode(events: Sequence[StoredEvent], after: int | None) -> dict[str, str]:
    rows = [
        [e.cursor, e.tenant_id, e.sequence, e.server_timestamp, _event_dict(e.event)]
        for e in events
    ]
    return {
        "after": "" if after is None else str(after),
        "events": json.dumps(rows, separators=(",", ":")),
    }


def decode(fields: dict[bytes, bytes]) -> tuple[int | None, list[StoredEvent]]:
    raw_after = fields.get(b"after", b"")
    after = int(raw_after) if raw_after else None
    events = []
    for cursor, tenant_id, sequence, ts, event in json.loads(fields[b"events"]):
        event["type"] = EventType(event["type"])
        events.append(StoredEvent(cursor, tenant_id, sequence, ts, NewEvent(**event)))
    return after, events


def _event_dict(event: NewEvent) -> dict[str, Any]:
    data = asdict(event)
    data["type"] = event.type.value
    data["data"] = dict(event.data)
    return data


class RedisBus:
    def __init__(self, config: RedisBusConfig) -> None:
        self._config = config
        self._local = InProcessBus()
        self._outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue(config.max_pending)
        self._writer = aioredis.Redis.from_url(
            config.url, socket_timeout=5, socket_connect_timeout=2
        )
        self._reader = aioredis.Redis.from_url(
            config.url,
            socket_timeout=config.block_ms / 1000 + 5,
            socket_connect_timeout=2,
        )
        self._tasks: list[asyncio.Task[None]] = []
        # The last cursor of the chain of entries seen in order; None: unknown.
        self._head: int | None = None
        # Entries that arrived ahead of their predecessor, by their ``after``.
        self._ahead: dict[int, list[StoredEvent]] = {}
        self._ahead_since = 0.0
        self.connected = False
        self._publish_failing = False
        self.catch_ups = 0

    @property
    def subscriber_count(self) -> int:
        return self._local.subscriber_count

    def subscribe(self, tenant_id: str, accept: EventFilter, limit: int = 10_000) -> Subscription:
        return self._local.subscribe(tenant_id, accept, limit)

    def publish(self, events: Sequence[StoredEvent]) -> None:
        after = events.after if isinstance(events, CommittedEvents) else None
        try:
            self._outbox.put_nowait(encode(events, after))
        except asyncio.QueueFull:
            # Readers will see the chain break and catch up from the log.
            log.warning("redis bus: %d events not fanned out, outbox full", len(events))

    def shutdown(self) -> None:
        self._local.shutdown()

    async def start(self) -> None:
        self._tasks = [
            supervised(self._publish_loop(), "redis-bus-publish"),
            supervised(self._read_loop(), "redis-bus-read"),
        ]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _done, stuck = await asyncio.wait(tasks, timeout=1)
            if stuck:
                # A blocking XREAD can sit out its cancellation on a connection
                # that outlived a Redis restart; dropping the sockets ends it.
                await self._reader.connection_pool.disconnect()
                await cancel_and_wait(*stuck)
        await self._writer.aclose()
        await self._reader.aclose()

    async def _publish_loop(self) -> None:
        while True:
            entries = [await self._outbox.get()]
            while not self._outbox.empty():
                entries.append(self._outbox.get_nowait())
            try:
                try:
                    await self._xadd(entries)
                except (RedisError, OSError):
                    # A pooled connection may have died with a Redis restart;
                    # a fresh one usually works. A repeated entry is harmless:
                    # readers drop what precedes the chain's end.
                    await self._xadd(entries)
            except (RedisError, OSError) as exc:
                if not self._publish_failing:
                    log.warning("redis bus: publishing failed (%s); readers use the log", exc)
                self._publish_failing = True
            else:
                self._publish_failing = False

    async def _xadd(self, entries: list[dict[str, str]]) -> None:
        # One round trip for everything waiting, in commit order.
        async with self._writer.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(
                    self._config.stream,
                    fields,  # type: ignore[arg-type]
                    maxlen=self._config.max_len,
                    approximate=True,
                )
            await pipe.execute()

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_id = "$"
        while True:
            try:
                if last_id == "$":
                    # Read on from the stream's current end, by id; what
                    # came before is read from the log (the resync below).
                    newest: Any = await self._reader.xrevrange(self._config.stream, count=1)
                    last_id = newest[0][0].decode() if newest else "0-0"
                    self._head = None
                    self.connected = True
                    # Whatever committed before that point is in the log only.
                    self._local.resync_all()
                block = (
                    int(self._config.reorder_wait * 1000) if self._ahead else self._config.block_ms
                )
                reply: Any = await self._reader.xread({self._config.stream: last_id}, block=block)
            except (RedisError, OSError) as exc:
                await self._lost(exc)
                last_id = "$"
                continue
            if not reply:
                if self._ahead:
                    self._give_up_waiting()
                continue
            for entry_id, fields in reply[0][1]:
                last_id = entry_id.decode()
                try:
                    after, events = decode(fields)
                except (KeyError, TypeError, ValueError):
                    # e.g. written by a replica of another version: the log has it.
                    log.warning("redis bus: unreadable entry %s", last_id)
                    self._catch_up(None)
                    continue
                self._take(after, events)
            if self._ahead and loop.time() - self._ahead_since > self._config.reorder_wait:
                self._give_up_waiting()

    def _take(self, after: int | None, events: list[StoredEvent]) -> None:
        if not events:
            return
        if after is not None and self._head is not None:
            if after < self._head:
                # Older than what subscribers already read from the log.
                return
            if after > self._head:
                if not self._ahead:
                    self._ahead_since = asyncio.get_running_loop().time()
                self._ahead[after] = events
                return
        if after is None or self._head is None:
            # Nothing to chain to: whatever came before must be read from the log.
            self._catch_up(events[-1].cursor)
            return
        self._local.publish(events)
        self._head = events[-1].cursor
        while (following := self._ahead.pop(self._head, None)) is not None:
            self._local.publish(following)
            self._head = following[-1].cursor

    def _give_up_waiting(self) -> None:
        newest = max(events[-1].cursor for events in self._ahead.values())
        self._ahead.clear()
        self._catch_up(newest)

    def _catch_up(self, head: int | None) -> None:
        self.catch_ups += 1
        self._head = head
        self._ahead.clear()
        self._local.resync_all()

    async def _lost(self, exc: BaseException) -> None:
        """Serve subscribers from the log until Redis answers again."""
        if self.connected:
            log.warning("redis bus: lost Redis (%s); subscribers read the log", exc)
        self.connected = False
        self._head = None
        self._ahead.clear()
        while True:
            self._local.resync_all()
            await asyncio.sleep(self._config.poll_interval)
            with contextlib.suppress(RedisError, OSError):
                if await self._reader.ping():
                    log.warning("redis bus: Redis is back")
                    return
