"""Translation between protobuf messages and domain records."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from cim.v1 import (
    cim_message_pb2,
    delivery_pb2,
    messaging_service_pb2,
    notification_service_pb2,
    session_service_pb2,
)
from server.domain.cim import typed_body
from server.domain.events import StoredEvent
from server.domain.fallback import FallbackLeg, succeeded_leg
from server.domain.models import AttemptEntry, OutboundMessage, Session, SessionState
from server.domain.status import DeliveryStatus

NOTIFICATION_KIND = "notification"


# Looked up by name once: a batch's reply converts a status per destination,
# and the descriptor's lookup by a formatted name took 0.56 µs against 0.13.
_STATUS_TO_PROTO = {
    status: delivery_pb2.DeliveryStatus.Value(f"DELIVERY_STATUS_{status.value}")
    for status in DeliveryStatus
}


def status_to_proto(status: DeliveryStatus) -> delivery_pb2.DeliveryStatus.ValueType:
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: delivery_pb2.DeliveryStatus.ValueType) -> DeliveryStatus | None:
    if value == delivery_pb2.DELIVERY_STATUS_UNSPECIFIED:
        return None
    return DeliveryStatus(delivery_pb2.DeliveryStatus.Name(value).removeprefix("DELIVERY_STATUS_"))


def session_state_to_proto(state: SessionState) -> session_service_pb2.SessionState.ValueType:
    return session_service_pb2.SessionState.Value(f"SESSION_STATE_{state.value}")


def session_state_from_proto(
    value: session_service_pb2.SessionState.ValueType,
) -> SessionState | None:
    if value == session_service_pb2.SESSION_STATE_UNSPECIFIED:
        return None
    return SessionState(session_service_pb2.SessionState.Name(value).removeprefix("SESSION_STATE_"))


def cim_from_proto(message: cim_message_pb2.CimMessage, path: str) -> dict[str, Any]:
    """A received CIM message as JSON, with its body in the typed form.

    ``path`` is where the message sits in the request, for error field paths.
    """
    doc = json_format.MessageToDict(message)
    if "body" in doc:
        doc["body"] = typed_body(doc["body"], f"{path}.body")
    return doc


def message_to_proto(m: OutboundMessage) -> messaging_service_pb2.Message:
    return messaging_service_pb2.Message(
        id=m.id,
        channel_id=m.channel_id,
        type=m.type,
        destination=m.destination,
        correlation_id=m.correlation_id,
        conversation_id=m.conversation_id,
        status=status_to_proto(m.status),
        history=[
            delivery_pb2.StatusChange(
                status=status_to_proto(h.status), timestamp=h.timestamp, reason=h.reason
            )
            for h in m.history
        ],
        create_time=m.created_at,
        provider_message_id=m.provider_message_id,
        text="" if m.mask else m.text,
        attempts=m.attempts,
        segments=m.segments,
        attempt_log=[attempt_to_proto(a) for a in m.attempt_log],
        batch_id=m.batch_id,
        fallback=[leg_to_proto(leg) for leg in m.fallback],
        succeeded_leg=won.leg if (won := succeeded_leg(m.fallback)) is not None else 0,
    )


def leg_to_proto(leg: FallbackLeg) -> messaging_service_pb2.FallbackLeg:
    return messaging_service_pb2.FallbackLeg(
        leg=leg.leg,
        channel_id=leg.channel_id,
        state=messaging_service_pb2.FallbackLegState.Value(f"FALLBACK_LEG_STATE_{leg.state.value}"),
        deadline_seconds=(leg.deadline_ms or 0) // 1000,
        success_status=status_to_proto(leg.success),
        fire_time=leg.fired_at or 0,
        leave_time=leg.left_at or 0,
        due_time=leg.due_at or 0,
        settle_time=leg.settled_at or 0,
        provider_message_id=leg.provider_message_id,
        late_time=leg.late_at or 0,
    )


def attempt_to_proto(a: AttemptEntry) -> delivery_pb2.DeliveryAttempt:
    return delivery_pb2.DeliveryAttempt(
        number=a.number,
        channel_id=a.channel_id,
        provider=a.provider,
        outcome=a.outcome,
        provider_message_id=a.provider_message_id,
        error_code=a.error_code,
        reason=a.reason,
        segments=a.segments,
        timestamp=a.timestamp,
        latency_ms=a.latency_ms,
    )


def session_to_proto(s: Session) -> session_service_pb2.Session:
    return session_service_pb2.Session(
        id=s.id,
        contact_id=s.contact_id,
        channel_id=s.channel_id,
        state=session_state_to_proto(s.state),
        conversation_id=s.conversation_id,
        queue=s.queue,
        agent=s.agent,
        create_time=s.created_at,
        update_time=s.updated_at,
        team=s.team,
        skills=list(s.skills),
        params=_struct(s.params) if s.params else None,
        routing_id=s.routing_id,
        close_reason=s.close_reason,
        last_activity_time=s.last_activity_at,
    )


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    found = struct_pb2.Struct()
    found.update(dict(values))
    return found


class ChangeCache:
    """Each event's Change, built once however many subscribers receive it.

    Owned by one servicer, and so by one event log: cursors are unique there.
    """

    def __init__(self, size: int = 20_000, envelopes: int = 512) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int], notification_service_pb2.Change] = OrderedDict()
        # Subscribers that get the same run of events get the same response:
        # building it copies every Change, once per subscriber without this.
        self._envelopes_size = envelopes
        self._envelopes: OrderedDict[
            tuple[str, tuple[int, ...]], notification_service_pb2.StreamNotificationsResponse
        ] = OrderedDict()

    def envelope(
        self, group: list[StoredEvent]
    ) -> notification_service_pb2.StreamNotificationsResponse:
        key = (group[0].tenant_id, tuple(e.cursor for e in group))
        cached = self._envelopes.get(key)
        if cached is None:
            cached = _build_envelope(group, self.get)
            self._envelopes[key] = cached
            if len(self._envelopes) > self._envelopes_size:
                self._envelopes.popitem(last=False)
        return cached

    def get(self, stored: StoredEvent) -> notification_service_pb2.Change:
        key = (stored.tenant_id, stored.cursor)
        cached = self._items.get(key)
        if cached is None:
            cached = change_from_event(stored)
            self._items[key] = cached
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return cached


def change_from_event(stored: StoredEvent) -> notification_service_pb2.Change:
    e = stored.event
    event = notification_service_pb2.Event(
        type=e.type.value,
        message=e.message,
        content_type=e.content_type,
        message_id=e.message_id,
        status=e.status,
        reason=e.reason,
        channel_id=e.channel_id,
        customer_id=e.customer_id,
        chat_state=str(e.data.get("chatState", "")),
        accept_status=str(e.data.get("acceptStatus", "")),
    )
    if e.data:
        data = struct_pb2.Struct()
        data.update(dict(e.data))
        event.data.CopyFrom(data)
    return notification_service_pb2.Change(
        sequence=stored.sequence,
        originator_id=e.originator_id,
        originator_metadata=notification_service_pb2.OriginatorMetadata(
            id=e.originator_id, role=e.originator_role
        ),
        server_timestamp=stored.server_timestamp,
        event=event,
        conversation_id=e.conversation_id,
        dialog_id=e.dialog_id or e.conversation_id,
        message_audience=e.audience,
    )


def notifications(
    events: Iterable[StoredEvent], cache: ChangeCache | None = None
) -> Iterator[notification_service_pb2.StreamNotificationsResponse]:
    """Coalesce consecutive events of the same notification type into one envelope."""
    group: list[StoredEvent] = []
    for event in events:
        if group and group[-1].notification_type != event.notification_type:
            yield _envelope(group, cache)
            group = []
        group.append(event)
    if group:
        yield _envelope(group, cache)


def _envelope(
    group: list[StoredEvent], cache: ChangeCache | None
) -> notification_service_pb2.StreamNotificationsResponse:
    if cache is not None:
        return cache.envelope(group)
    return _build_envelope(group, change_from_event)


def _build_envelope(
    group: list[StoredEvent], build: Callable[[StoredEvent], notification_service_pb2.Change]
) -> notification_service_pb2.StreamNotificationsResponse:
    return notification_service_pb2.StreamNotificationsResponse(
        notification=notification_service_pb2.Notification(
            kind=NOTIFICATION_KIND,
            type=group[0].notification_type,
            body=notification_service_pb2.NotificationBody(changes=[build(e) for e in group]),
        ),
        cursor=encode_cursor(group[-1].cursor),
    )


def encode_cursor(cursor: int) -> str:
    return f"c{cursor}"


def decode_cursor(token: str) -> int | None:
    if not token.startswith("c") or not token[1:].isdigit():
        return None
    return int(token[1:])
