"""MessagingService's requests as the domain sees them: sends, batches, their keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from cim.v1 import messaging_service_pb2 as pb
from cim.v1 import outbound_pb2
from server.api.context import metadata_value
from server.api.convert import status_from_proto
from server.domain.batch import BatchGroup, BatchSend
from server.domain.fallback import FallbackStep
from server.domain.sending import SingleSend
from server.domain.status import DeliveryStatus
from server.storage.accept import IdempotencyKey

# messages.request_id is String(128).
MAX_REQUEST_ID = 128
_CONTENT_PARTS = ("audio", "document", "image", "video", "location", "template", "text", "options")


def _type_name(value: outbound_pb2.OutboundMessageType.ValueType) -> str:
    if value == outbound_pb2.OUTBOUND_MESSAGE_TYPE_UNSPECIFIED:
        return ""
    return (
        outbound_pb2.OutboundMessageType.Name(value).removeprefix("OUTBOUND_MESSAGE_TYPE_").lower()
    )


def single_send(request: pb.SendMessageRequest) -> SingleSend:
    content: dict[str, Any] = {
        part: MessageToDict(getattr(request, part))
        for part in _CONTENT_PARTS
        # The part names are fixed above; mypy only knows the literal spellings.
        if request.HasField(part)  # type: ignore[arg-type]
    }
    if request.contacts:
        content["contacts"] = [MessageToDict(c) for c in request.contacts]
    if request.message_id_resend:
        content["messageIdResend"] = request.message_id_resend
    return SingleSend(
        channel_id=request.channel_id,
        type=_type_name(request.type),
        to=MessageToDict(request.to),
        content=content,
        mask=request.mask,
    )


def batch_send_of(request: pb.SendBatchRequest) -> BatchSend:
    return BatchSend(
        channel=request.channel,
        from_address=request.from_address,
        groups=tuple(
            BatchGroup(tuple(g.msisdn), tuple(g.email), g.correlation_id, dict(g.substitutions))
            for g in request.to
        ),
        substitutions=dict(request.substitutions),
        send_at=request.send_at,
        expire_at=request.expire_at,
        validity=request.validity,
        priority=request.priority,
        options=MessageToDict(request.options),
        callback_data=request.callback_data,
        notify_url=request.notify_url,
        requested_receipts=tuple(request.requested_receipts),
        content=MessageToDict(request.content) if request.HasField("content") else None,
        template=MessageToDict(request.template) if request.HasField("template") else None,
        cc=tuple(request.cc),
        bcc=tuple(request.bcc),
        appid=request.appid,
        fallback=fallback_steps(request.fallback),
        category=request.category,
    )


def fallback_steps(steps: Sequence[pb.FallbackStep]) -> tuple[FallbackStep, ...]:
    return tuple(
        FallbackStep(
            s.channel_id,
            s.deadline_seconds,
            status_from_proto(s.success_status) or DeliveryStatus.DELIVERED,
        )
        for s in steps
    )


def request_id(context: grpc.aio.ServicerContext) -> str:
    """The call's x-request-id, kept with what it accepts; dropped if too long to store."""
    given = metadata_value(context, "x-request-id")
    return given if len(given) <= MAX_REQUEST_ID and given.isprintable() else ""


def idempotency(request: Any, context: grpc.aio.ServicerContext) -> IdempotencyKey | None:
    key = request.request_id or metadata_value(context, "idempotency-key")
    if not key:
        return None
    # The key itself is not part of what must match on a retry.
    body = type(request)()
    body.CopyFrom(request)
    body.ClearField("request_id")
    return IdempotencyKey.of(key, body.SerializeToString(deterministic=True))
