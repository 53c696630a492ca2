"""WebhookService: dead letters, redrive and the tenant webhook's health."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import grpc

from cim.v1 import webhook_service_pb2 as pb
from cim.v1 import webhook_service_pb2_grpc as pb_grpc
from server.api.context import tenant_of
from server.api.timeline import dead_letter_to_proto, endpoint_to_proto
from server.domain.errors import FieldViolation, invalid, not_found
from server.domain.models import Page
from server.domain.paging import DEAD_LETTERS, PageRequest
from server.domain.webhook_delivery import DeadLetter, EndpointState, Redriven, row_of


def _time_range(start: int, end: int) -> tuple[int, int]:
    if end and end <= start:
        raise invalid([FieldViolation("endTime", "must be after startTime")])
    return start, end


class DeadLetters(Protocol):
    """Webhook posts given up on, and the tenant endpoint's state."""

    async def list_dead_letters(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        start: int = 0,
        end: int = 0,
        url: str = "",
    ) -> Page[DeadLetter]: ...

    async def redrive_dead_letter(self, tenant_id: str, row_id: int) -> None: ...

    async def redrive_dead_letters(
        self, tenant_id: str, start: int, end: int, url: str
    ) -> Redriven: ...

    async def webhook_endpoint(self, tenant_id: str) -> EndpointState: ...

    async def enable_webhook_endpoint(self, tenant_id: str) -> EndpointState: ...


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    def __init__(self, store: DeadLetters, on_redrive: Callable[[], None] = lambda: None) -> None:
        self._store = store
        # Redriven rows are due now: the sender looks at once instead of at its next poll.
        self._on_redrive = on_redrive

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        tenant = tenant_of(context)
        start, end = _time_range(request.start_time, request.end_time)
        wanted = DEAD_LETTERS.request(
            tenant, request.page_size, request.page_token, start=start, end=end, url=request.url
        )
        page = await self._store.list_dead_letters(
            tenant,
            page=wanted,
            start=start,
            end=end,
            url=request.url,
        )
        return pb.ListDeadLettersResponse(
            results=[dead_letter_to_proto(d) for d in page.items], next_page_token=page.next_token
        )

    async def RedriveDeadLetter(
        self, request: pb.RedriveDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedriveDeadLetterResponse:
        row_id = row_of(request.delivery_id)
        if row_id is None:
            raise not_found("dead letter", request.delivery_id)
        await self._store.redrive_dead_letter(tenant_of(context), row_id)
        self._on_redrive()
        return pb.RedriveDeadLetterResponse(delivery_id=request.delivery_id)

    async def RedriveDeadLetters(
        self, request: pb.RedriveDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedriveDeadLettersResponse:
        start, end = _time_range(request.start_time, request.end_time)
        done = await self._store.redrive_dead_letters(tenant_of(context), start, end, request.url)
        self._on_redrive()
        return pb.RedriveDeadLettersResponse(redriven=done.redriven, skipped=done.skipped)

    async def GetWebhookEndpoint(
        self, request: pb.GetWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWebhookEndpointResponse:
        endpoint = await self._store.webhook_endpoint(tenant_of(context))
        return pb.GetWebhookEndpointResponse(endpoint=endpoint_to_proto(endpoint))

    async def EnableWebhookEndpoint(
        self, request: pb.EnableWebhookEndpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnableWebhookEndpointResponse:
        endpoint = await self._store.enable_webhook_endpoint(tenant_of(context))
        return pb.EnableWebhookEndpointResponse(endpoint=endpoint_to_proto(endpoint))
