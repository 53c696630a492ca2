"""A message's timeline and webhook deliveries, domain to proto."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import struct_pb2

from cim.v1 import timeline_pb2, webhook_service_pb2
from server.api.convert import attempt_to_proto, status_to_proto
from server.domain.models import OutboundMessage
from server.domain.timeline import TimelineStep
from server.domain.webhook_delivery import (
    NOTIFY_URL,
    TENANT,
    DeadLetter,
    EndpointState,
    WebhookAttemptEntry,
)

_ENDPOINT_KIND = {
    TENANT: timeline_pb2.WEBHOOK_ENDPOINT_KIND_TENANT,
    NOTIFY_URL: timeline_pb2.WEBHOOK_ENDPOINT_KIND_NOTIFY_URL,
}


def endpoint_kind(endpoint: str) -> timeline_pb2.WebhookEndpointKind.ValueType:
    return _ENDPOINT_KIND.get(endpoint, timeline_pb2.WEBHOOK_ENDPOINT_KIND_UNSPECIFIED)


def timeline_to_proto(
    m: OutboundMessage, steps: Sequence[TimelineStep]
) -> timeline_pb2.GetMessageTimelineResponse:
    return timeline_pb2.GetMessageTimelineResponse(
        message_id=m.id, status=status_to_proto(m.status), steps=[step_to_proto(s) for s in steps]
    )


def step_to_proto(s: TimelineStep) -> timeline_pb2.TimelineStep:
    step = timeline_pb2.TimelineStep(
        kind=timeline_pb2.TimelineStepKind.Value(f"TIMELINE_STEP_KIND_{s.kind.value}"),
        timestamp=s.timestamp,
        reason=s.reason,
        request_id=s.request_id,
        trace_id=s.trace_id,
        send_time=s.send_time,
        from_channel_id=s.from_channel_id,
        to_channel_id=s.to_channel_id,
    )
    if s.status is not None:
        step.status = status_to_proto(s.status)
    if s.attempt is not None:
        step.attempt.CopyFrom(attempt_to_proto(s.attempt))
    if s.webhook is not None:
        step.webhook.CopyFrom(webhook_attempt_to_proto(s.webhook))
    return step


def webhook_attempt_to_proto(w: WebhookAttemptEntry) -> timeline_pb2.WebhookAttempt:
    return timeline_pb2.WebhookAttempt(
        delivery_id=w.delivery_id,
        url=w.url,
        endpoint=endpoint_kind(w.endpoint),
        number=w.number,
        http_status=w.http_status,
        error=w.error,
        latency_ms=w.latency_ms,
        timestamp=w.timestamp,
    )


def dead_letter_to_proto(d: DeadLetter) -> webhook_service_pb2.DeadLetter:
    payload = struct_pb2.Struct()
    payload.update(dict(d.payload))
    return webhook_service_pb2.DeadLetter(
        delivery_id=d.delivery_id,
        url=d.url,
        endpoint=endpoint_kind(d.endpoint),
        message_id=d.message_id,
        last_http_status=d.last_status,
        last_error=d.last_error,
        attempts=d.attempts,
        create_time=d.created_at,
        first_attempt_time=d.first_attempt_at,
        last_attempt_time=d.last_attempt_at,
        dead_time=d.dead_at,
        payload=payload,
    )


def endpoint_to_proto(e: EndpointState) -> webhook_service_pb2.WebhookEndpoint:
    if not e.url:
        state = webhook_service_pb2.WEBHOOK_ENDPOINT_STATE_NONE
    elif e.disabled:
        state = webhook_service_pb2.WEBHOOK_ENDPOINT_STATE_DISABLED
    else:
        state = webhook_service_pb2.WEBHOOK_ENDPOINT_STATE_ENABLED
    return webhook_service_pb2.WebhookEndpoint(
        url=e.url,
        state=state,
        disabled_reason=e.disabled_reason,
        disable_time=e.disabled_at or 0,
        failing_since=e.failing_since or 0,
    )
