"""MessagingService: proto in, domain call, proto out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import grpc
from google.protobuf.json_format import MessageToDict

from cim.v1 import messaging_service_pb2 as pb
from cim.v1 import messaging_service_pb2_grpc as pb_grpc
from cim.v1 import timeline_pb2
from server.actions import batch_send, cancel, dry_run
from server.actions.batch_send import BatchSources
from server.actions.consent import ConsentRules
from server.actions.quota import BudgetSource, DispatchLoad, QueueSource, quota
from server.actions.single_send import SendOne, TemplateRef, send_message
from server.api.context import tenant_of
from server.api.convert import message_to_proto, status_from_proto, status_to_proto
from server.api.inbound import InboundApi
from server.api.send_control import cancel_result_to_proto, check_to_proto, quota_to_proto
from server.api.send_requests import (
    batch_send_of,
    fallback_steps,
    idempotency,
    request_id,
    single_send,
)
from server.api.timeline import timeline_to_proto
from server.channels import ChannelRegistry
from server.domain import timeline
from server.domain.batch import PlannedDestination
from server.domain.models import Channel, OutboundDraft, OutboundMessage, Page
from server.domain.paging import MESSAGES, PageRequest
from server.domain.status import DeliveryStatus
from server.storage.accept import AcceptResult, IdempotencyKey
from server.storage.tx import now_ms
from server.telemetry.tracing import current_traceparent


class MessageStore(cancel.CancelStore, QueueSource, Protocol):
    """The tenant's outbound messages: accepted, read back, cancelled, counted ahead."""

    async def accept(
        self,
        tenant_id: str,
        drafts: Sequence[OutboundDraft],
        idem: IdempotencyKey | None,
        render: Callable[[Sequence[OutboundMessage]], bytes],
        traceparent: str = "",
    ) -> AcceptResult: ...

    async def get_message(self, tenant_id: str, message_id: str) -> OutboundMessage: ...

    async def list_messages(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        status: DeliveryStatus | None = None,
        channel_id: str = "",
        correlation_id: str = "",
    ) -> Page[OutboundMessage]: ...

    async def message_timeline(
        self, tenant_id: str, message_id: str
    ) -> tuple[OutboundMessage, list[timeline.TimelineStep]]: ...


class MessagingServicer(pb_grpc.MessagingServiceServicer):
    def __init__(
        self,
        store: MessageStore,
        channels: ChannelRegistry,
        on_accept: Callable[[], None],
        clock: Callable[[], int] = now_ms,
        *,
        sources: BatchSources,
        inbound: InboundApi,
        url_check: Callable[[str], str | None] | None = None,
        budget: BudgetSource,
        load: DispatchLoad,
        consent: ConsentRules,
    ) -> None:
        # The request budget the guard spends, and the dispatcher's load: for GetQuota.
        self._budget = budget
        self._load = load
        # Refuses callback URLs the outbound guard would refuse, at submit time.
        self._url_check = url_check
        self._store = store
        self._sources = sources
        # A tenant sends on the operator's channels and its own; another
        # tenant's channels are as if they did not exist.
        self._channels = channels
        self._on_accept = on_accept
        self._clock = clock
        self._inbound = inbound
        self._consent = consent

    async def SendMessage(
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendMessageResponse:
        tenant = tenant_of(context)
        ref = request.template
        one = SendOne(
            single_send(request),
            TemplateRef(
                ref.id, ref.code, ref.lang, MessageToDict(ref.data) if ref.HasField("data") else {}
            )
            if request.HasField("template")
            else None,
            fallback_steps(request.fallback),
            contact_id=request.to.contact_id,
            request_id=request_id(context),
        )

        def render(created: Sequence[OutboundMessage]) -> bytes:
            return _send_response(created[0]).SerializeToString()

        draft, result = await send_message(
            self._store,
            self._sources,
            self._channels_of(tenant),
            tenant,
            one,
            screen=lambda drafts: self._consent.screen(tenant, drafts, request.category),
            idem=idempotency(request, context),
            render=render,
            traceparent=current_traceparent(),
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
            self._sources,
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
            self._sources,
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
