"""NotificationService: replay from the event log after a cursor, then live events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from cim.v1 import notification_service_pb2 as pb
from cim.v1 import notification_service_pb2_grpc as pb_grpc
from server.api.context import tenant_of
from server.api.convert import decode_cursor, encode_cursor, notifications
from server.domain.errors import Code, DomainError, FieldViolation, invalid
from server.domain.events import StoredEvent
from server.events.bus import EventFilter, InProcessBus
from server.storage.store import SqlStore
from server.storage.writer import now_ms

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


class NotificationServicer(pb_grpc.NotificationServiceServicer):
    def __init__(
        self,
        store: SqlStore,
        bus: InProcessBus,
        *,
        heartbeat_seconds: float = 15.0,
        buffer_limit: int = 10_000,
    ) -> None:
        self._store = store
        self._bus = bus
        self._heartbeat = heartbeat_seconds
        self._buffer_limit = buffer_limit

    async def StreamNotifications(
        self, request: pb.StreamNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamNotificationsResponse]:
        tenant = tenant_of(context)
        after = 0
        if request.after:
            cursor = decode_cursor(request.after)
            if cursor is None:
                raise invalid([FieldViolation("after", "not a cursor this server issued")])
            after = cursor
        accept = event_filter(request)
        # Subscribe before replaying, so nothing committed during the replay is
        # missed; the cursor comparison below drops what the replay already sent.
        sub = self._bus.subscribe(tenant, accept, self._buffer_limit)
        try:
            last = after
            if request.after:
                while page := await self._store.events_after(tenant, last, REPLAY_PAGE):
                    wanted = [e for e in page if accept(e)]
                    for item in notifications(wanted):
                        yield item
                    last = page[-1].cursor
            while True:
                batch = await sub.next_batch(self._heartbeat)
                if sub.terminated:
                    raise DomainError(Code.UNAVAILABLE, "SHUTTING_DOWN", "server is shutting down")
                if sub.overflowed:
                    raise DomainError(
                        Code.RESOURCE_EXHAUSTED,
                        "SUBSCRIBER_TOO_SLOW",
                        "the subscriber fell too far behind; resume from the cursor",
                        metadata={"cursor": encode_cursor(last)},
                    )
                fresh = [e for e in batch if e.cursor > last]
                if fresh:
                    for item in notifications(fresh):
                        yield item
                    last = fresh[-1].cursor
                elif not batch:
                    yield pb.StreamNotificationsResponse(
                        heartbeat=pb.Heartbeat(server_timestamp=now_ms()),
                        cursor=encode_cursor(last),
                    )
        finally:
            sub.close()
