"""MessagingService: proto in, domain call, proto out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from cim.v1 import messaging_service_pb2 as pb
from cim.v1 import messaging_service_pb2_grpc as pb_grpc
from cim.v1 import outbound_pb2, timeline_pb2
from server.actions import batch_send, cancel, dry_run
from server.actions.consent import ConsentRules
from server.actions.quota import BudgetSource, DispatchLoad, quota
from server.api.context import metadata_value, tenant_of
from server.api.convert import message_to_proto, status_from_proto, status_to_proto
from server.api.inbound import InboundApi
from server.api.send_control import cancel_result_to_proto, check_to_proto, quota_to_proto
from server.api.timeline import timeline_to_proto
from server.channels import ChannelRegistry
from server.domain.batch import (
    BatchGroup,
    BatchSend,
    PlannedDestination,
)
from server.domain.customer import require_approved, text_value, var_values
from server.domain.errors import FieldViolation, invalid
from server.domain.fallback import FallbackStep, plan_chain
from server.domain.models import Channel, OutboundDraft, OutboundMessage
from server.domain.paging import MESSAGES
from server.domain.sending import SingleSend, fill_template, fill_text, plan_single
from server.domain.status import DeliveryStatus
from server.storage.messages import IdempotencyKey
from server.storage.store import SqlStore
from server.storage.writer import now_ms
from server.telemetry.tracing import current_traceparent

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


class MessagingServicer(pb_grpc.MessagingServiceServicer):
    def __init__(
        self,
        store: SqlStore,
        channels: ChannelRegistry,
        on_accept: Callable[[], None],
        clock: Callable[[], int] = now_ms,
        *,
        inbound: InboundApi | None = None,
        url_check: Callable[[str], str | None] | None = None,
        budget: BudgetSource,
        load: DispatchLoad,
        consent: ConsentRules | None = None,
    ) -> None:
        # The request budget the guard spends, and the dispatcher's load: for GetQuota.
        self._budget = budget
        self._load = load
        # Refuses callback URLs the outbound guard would refuse, at submit time.
        self._url_check = url_check
        self._store = store
        # A tenant sends on the operator's channels and its own; another
        # tenant's channels are as if they did not exist.
        self._channels = channels
        self._on_accept = on_accept
        self._clock = clock
        # Without a configured verify token the webhooks refuse every call.
        self._inbound = inbound or InboundApi(store, channels, verify_token="")
        self._consent = consent or ConsentRules(store, channels, on_accept)

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendMessageResponse:
        tenant = tenant_of(context)
        channels = self._channels_of(tenant)
        draft = plan_single(tenant, single_send(request), channels)
        draft = await self._personalise(tenant, request, draft)
        legs = plan_chain(channels[draft.channel_id], fallback_steps(request.fallback), channels)
        draft = replace(draft, request_id=request_id(context), fallback=legs)
        [draft] = await self._consent.screen(tenant, [draft], request.category)

        def render(created: Sequence[OutboundMessage]) -> bytes:
            return _send_response(created[0]).SerializeToString()

        result = await self._store.accept(
            tenant, [draft], idempotency(request, context), render, current_traceparent()
        )
        if result.replay is not None:
            replayed = pb.SendMessageResponse.FromString(result.replay)
            # Replies kept before the receipt carried id still answer with it.
            replayed.id = replayed.id or replayed.message_id
            return replayed
        if not draft.refusal:
            self._on_accept()
        return _send_response(result.messages[0])

    async def SendBatch(
        self, request: pb.SendBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendBatchResponse:
        tenant = tenant_of(context)
        planned, result = await batch_send.send_batch(
            self._store,
            self._channels_of(tenant),
            tenant,
            batch_send_of(request),
            self._clock(),
            idem=idempotency(request, context),
            render=lambda p, created: _batch_response(p, created).SerializeToString(),
            url_check=self._url_check,
            request_id=request_id(context),
            traceparent=current_traceparent(),
            screen=lambda drafts: self._consent.screen(tenant, drafts, request.category),
        )
        if result.replay is not None:
            return pb.SendBatchResponse.FromString(result.replay)
        if result.messages:
            self._on_accept()
        return _batch_response(planned, result.messages)

    async def ValidateBatch(
        self, request: pb.SendBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateBatchResponse:
        tenant = tenant_of(context)
        found = await dry_run.validate_batch(
            self._store,
            self._channels_of(tenant),
            tenant,
            batch_send_of(request),
            self._clock(),
            url_check=self._url_check,
            consent=self._consent,
        )
        return check_to_proto(found)

    def _channels_of(self, tenant: str) -> Mapping[str, Channel]:
        return self._channels.visible_to(tenant)

    async def _personalise(
        self, tenant: str, request: pb.SendMessageRequest, draft: OutboundDraft
    ) -> OutboundDraft:
        """Global variables into the text, and for templates the stored template,
        in the contact's language when the request names none."""
        if draft.type != "template" and "$(" not in draft.text:
            return draft  # nothing to fill: spare the hot path a read
        stored_vars = await self._store.list_global_vars(tenant, draft.channel_id)
        values = {"destination": draft.destination, **var_values(stored_vars, draft.channel_id)}
        kind = self._channels_of(tenant)[draft.channel_id].contact_type
        if draft.type != "template":
            text = fill_text(draft, values, kind)
            if text == draft.text:
                return draft
            content = dict(draft.content)
            if "text" in content:
                content["text"] = text
            return replace(draft, text=text, content=content)
        ref = request.template
        lang = ref.lang
        if not lang and not ref.id:
            contact_ids = [request.to.contact_id, draft.destination]
            langs = await self._store.contact_langs(tenant, contact_ids)
            lang = next((langs[c] for c in contact_ids if c in langs), "")
        template = await self._store.find_template(
            tenant, template_id=ref.id, code=ref.code, lang=lang
        )
        if template is None and lang and not ref.lang:
            # No version in the preferred language: any language of the code.
            template = await self._store.find_template(tenant, code=ref.code)
        if template is None:
            raise invalid([FieldViolation("template.id", "unknown template")])
        require_approved(template.code, template.approvals, draft.channel_id)
        data = MessageToDict(ref.data) if ref.HasField("data") else {}
        values.update({k: text_value(v) for k, v in data.items()})
        body = fill_template(template.body, values, kind)
        content = dict(draft.content)
        content["text"] = body
        content["template"] = {
            **dict(content.get("template", {})),
            "id": template.id,
            "code": template.code,
            "lang": template.lang,
        }
        return replace(draft, text=body, content=content)

    async def CancelMessage(
        self, request: pb.CancelMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelMessageResponse:
        result = await cancel.cancel_message(
            self._store, tenant_of(context), request.message_id, request.reason
        )
        return pb.CancelMessageResponse(result=cancel_result_to_proto(result))

    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelBatchResponse:
        results = await cancel.cancel_batch(
            self._store, tenant_of(context), request.batch_id, request.reason
        )
        return pb.CancelBatchResponse(results=[cancel_result_to_proto(r) for r in results])

    async def GetQuota(
        self, request: pb.GetQuotaRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetQuotaResponse:
        tenant = tenant_of(context)
        found = await quota(
            tenant,
            self._channels_of(tenant),
            budget=self._budget,
            queue=self._store,
            load=self._load,
            channel_id=request.channel_id,
            priority=request.priority,
        )
        return quota_to_proto(found)

    async def GetMessage(
        self, request: pb.GetMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMessageResponse:
        message = await self._store.get_message(tenant_of(context), request.message_id)
        return pb.GetMessageResponse(message=message_to_proto(message))

    async def GetMessageTimeline(
        self, request: timeline_pb2.GetMessageTimelineRequest, context: grpc.aio.ServicerContext
    ) -> timeline_pb2.GetMessageTimelineResponse:
        message, steps = await self._store.message_timeline(tenant_of(context), request.message_id)
        return timeline_to_proto(message, steps)

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMessagesResponse:
        tenant = tenant_of(context)
        status = status_from_proto(request.status)
        wanted = MESSAGES.request(
            tenant,
            request.page_size,
            request.page_token,
            status=status,
            channel_id=request.channel_id,
            correlation_id=request.correlation_id,
        )
        page = await self._store.list_messages(
            tenant,
            page=wanted,
            status=status,
            channel_id=request.channel_id,
            correlation_id=request.correlation_id,
        )
        return pb.ListMessagesResponse(
            results=[message_to_proto(m) for m in page.items], next_page_token=page.next_token
        )

    async def ReceiveMessages(
        self, request: pb.ReceiveMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveMessagesResponse:
        return await self._inbound.receive(request, context)

    async def UpdateContactInfo(
        self, request: pb.UpdateContactInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateContactInfoResponse:
        return await self._inbound.update_contact(request, context)

    def verify_webhook(self, context: grpc.aio.ServicerContext) -> None:
        """Refuse a webhook call without its x-verify-token, before its payload is judged."""
        self._inbound.verify(context)


def _send_response(m: OutboundMessage) -> pb.SendMessageResponse:
    return pb.SendMessageResponse(
        message_id=m.id,
        id=m.id,
        status=status_to_proto(m.status),
        channel_id=m.channel_id,
        conversation_id=m.conversation_id,
        refusal=m.last_error if m.status is DeliveryStatus.FAILED else "",
    )


def _batch_response(
    planned: Sequence[PlannedDestination], created: Sequence[OutboundMessage]
) -> pb.SendBatchResponse:
    accepted = iter(created)
    results = []
    for p in planned:
        if p.draft is None:
            results.append(
                pb.BatchResult(
                    correlation_id=p.correlation_id, destination=p.destination, error=p.error
                )
            )
            continue
        m = next(accepted)
        results.append(
            pb.BatchResult(
                message_id=m.id,
                correlation_id=p.correlation_id,
                destination=p.destination,
                status=status_to_proto(m.status),
                # Refused for consent: stored, so its status and timeline say why.
                error=m.last_error if m.status is DeliveryStatus.FAILED else "",
            )
        )
    return pb.SendBatchResponse(results=results, batch_id=created[0].batch_id if created else "")
