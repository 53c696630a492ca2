"""NotificationService: replay from the event log after a cursor, then live events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

import grpc

from cim.v1 import notification_service_pb2 as pb
from cim.v1 import notification_service_pb2_grpc as pb_grpc
from server.aio import cancel_and_wait
from server.api.context import tenant_of
from server.api.convert import ChangeCache, decode_cursor, encode_cursor, notifications
from server.domain.errors import Code, DomainError, FieldViolation, invalid
from server.domain.events import StoredEvent
from server.events.bus import EventBus, EventFilter, Subscription
from server.storage.tx import now_ms

REPLAY_PAGE = 500


def event_filter(request: pb.StreamNotificationsRequest) -> EventFilter:
    conversations = frozenset(request.conversation_ids)
    types = frozenset(request.event_types)
    customer, channel, audience = request.customer_id, request.channel_id, request.message_audience

    def accept(stored: StoredEvent) -> bool:
        e = stored.event
        return (
            (not conversations or e.conversation_id in conversations)
            and (not types or e.type.value in types)
            and (not customer or e.customer_id == customer)
            and (not channel or e.channel_id == channel)
            and (not audience or e.audience == audience)
        )

    return accept


class _Stream:
    """One subscriber's stream: every write can be abandoned when the stream must stop."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        sub: Subscription,
        stall_seconds: float,
        cache: ChangeCache,
    ) -> None:
        self._context = context
        self._sub = sub
        self._stall = stall_seconds
        self._cache = cache
        self.last = 0
        self.stalled = False

    async def send(self, item: pb.StreamNotificationsResponse, cursor: int | None = None) -> None:
        self.check()
        write = asyncio.ensure_future(self._context.write(item))
        if not write.done():
            stop = asyncio.ensure_future(self._sub.stopped.wait())
            try:
                await asyncio.wait(
                    (write, stop), timeout=self._stall, return_when=asyncio.FIRST_COMPLETED
                )
            except asyncio.CancelledError:
                # The client cancelled mid-write: the write must not outlive the
                # call and end as an exception nobody retrieves.
                write.cancel()
                raise
            finally:
                stop.cancel()
            if not write.done():
                # Either we stopped buffering for this client, or it has not
                # taken a single write for the whole stall period.
                self.stalled = not self._sub.stopped.is_set()
                # The client stopped reading and we stopped buffering for it:
                # give up the write so the status below can end the stream.
                await cancel_and_wait(write)
                self.check()
        await write
        if cursor is not None:
            self.last = cursor

    def check(self) -> None:
        if self._sub.terminated:
            raise DomainError(Code.UNAVAILABLE, "SHUTTING_DOWN", "server is shutting down")
        if self._sub.overflowed or self.stalled:
            raise DomainError(
                Code.RESOURCE_EXHAUSTED,
                "SUBSCRIBER_TOO_SLOW",
                "the subscriber fell too far behind; resume from the cursor",
                metadata={"cursor": encode_cursor(self.last)},
            )

    async def events(self, batch: list[StoredEvent]) -> None:
        for item in notifications(batch, self._cache):
            await self.send(item, decode_cursor(item.cursor))


class EventLog(Protocol):
    """The tenant's committed events, by cursor."""

    async def events_after(self, tenant_id: str, cursor: int, limit: int) -> list[StoredEvent]: ...

    async def newest_cursor(self, tenant_id: str) -> int: ...

    async def retention_floor(self, tenant_id: str) -> int: ...


class KnownConversations(Protocol):
    async def require_conversations(
        self, tenant_id: str, conversation_ids: Iterable[str]
    ) -> None: ...


class NotificationServicer(pb_grpc.NotificationServiceServicer):
    def __init__(
        self,
        store: EventLog,
        bus: EventBus,
        *,
        conversations: KnownConversations,
        heartbeat_seconds: float = 15.0,
        buffer_limit: int = 10_000,
        stall_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._conversations = conversations
        self._bus = bus
        self._heartbeat = heartbeat_seconds
        self._buffer_limit = buffer_limit
        self._stall = stall_seconds
        # Built once per event for every subscriber. A live subscriber is at
        # most its buffer behind the newest event, so a cache of that many
        # covers every one of them, and stays in proportion to what each holds.
        self._changes = ChangeCache(size=buffer_limit)

    async def StreamNotifications(  # type: ignore[override]
        self, request: pb.StreamNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> None:
        tenant = tenant_of(context)
        after = 0
        if request.after:
            cursor = decode_cursor(request.after)
            if cursor is None:
                raise invalid([FieldViolation("after", "not a cursor this server issued")])
            after = cursor
        if request.conversation_ids:
            # Another tenant's conversation answers as a missing one does.
            await self._conversations.require_conversations(tenant, request.conversation_ids)
        accept = event_filter(request)
        # Subscribe before replaying, so nothing committed during the replay is
        # missed; the cursor comparison below drops what the replay already sent.
        sub = self._bus.subscribe(tenant, accept, self._buffer_limit)
        stream = _Stream(context, sub, self._stall, self._changes)
        try:
            if not request.after:
                # Live from now: a later catch-up from the log starts here, not
                # at the beginning of the log.
                after = await self._store.newest_cursor(tenant)
            stream.last = after
            # An immediate heartbeat confirms the subscription, so HTTP clients
            # get their status line without waiting for the first event.
            await stream.send(
                pb.StreamNotificationsResponse(
                    heartbeat=pb.Heartbeat(server_timestamp=now_ms()), cursor=encode_cursor(after)
                )
            )
            if request.after:
                await self._replay(tenant, stream, accept)
            loop = asyncio.get_running_loop()
            last_sent = loop.time()
            while True:
                quiet = loop.time() - last_sent
                batch = await sub.next_batch(max(0.0, self._heartbeat - quiet))
                if sub.take_behind():
                    # The bus may have missed events: the log has them all, and
                    # the buffered ones it also holds are dropped below.
                    await self._replay(tenant, stream, accept)
                fresh = [e for e in batch if e.cursor > stream.last]
                if fresh:
                    await stream.events(fresh)
                    last_sent = loop.time()
                elif loop.time() - last_sent >= self._heartbeat:
                    await stream.send(
                        pb.StreamNotificationsResponse(
                            heartbeat=pb.Heartbeat(server_timestamp=now_ms()),
                            cursor=encode_cursor(stream.last),
                        )
                    )
                    last_sent = loop.time()
                else:
                    stream.check()  # everything here was already replayed
        finally:
            sub.close()

    async def _replay(self, tenant: str, stream: _Stream, accept: EventFilter) -> None:
        floor = await self._store.retention_floor(tenant)
        if stream.last < floor:
            await stream.send(
                pb.StreamNotificationsResponse(
                    reset=pb.StreamReset(
                        reason="events before this cursor were removed by retention",
                        oldest_cursor=encode_cursor(floor),
                    ),
                    cursor=encode_cursor(floor),
                ),
                floor,
            )
        while page := await self._store.events_after(tenant, stream.last, REPLAY_PAGE):
            wanted = [e for e in page if accept(e)]
            await stream.events(wanted)
            # Filtered-out events still move the cursor, so a resume skips them too.
            stream.last = page[-1].cursor
