"""The inbound webhooks of MessagingService: ReceiveMessages and UpdateContactInfo."""

from __future__ import annotations

from typing import Protocol

import grpc
from google.protobuf.json_format import MessageToDict

from cim.v1 import messaging_service_pb2 as pb
from server.actions.consent import ConsentRules
from server.api.context import tenant_of
from server.api.session_views import contact_to_proto
from server.api.verify import check_verify_token
from server.channels import ChannelRegistry
from server.domain.contacts import Contact, ContactInfo, contact_info
from server.domain.errors import FieldViolation, invalid
from server.domain.inbound import plan_inbound


class ContactBook(Protocol):
    async def update_contact(self, tenant_id: str, info: ContactInfo) -> Contact: ...


class InboundApi:
    """Checks the verify token before anything else, so a refused call writes nothing."""

    def __init__(
        self,
        store: ContactBook,
        channels: ChannelRegistry,
        verify_token: str,
        consent: ConsentRules,
    ) -> None:
        self._store = store
        self._channels = channels
        self._token = verify_token
        self._consent = consent

    def verify(self, context: grpc.aio.ServicerContext) -> None:
        check_verify_token(context, self._token)

    async def receive(
        self, request: pb.ReceiveMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveMessagesResponse:
        check_verify_token(context, self._token)
        tenant = tenant_of(context)
        # Read live: a channel created a moment ago normalises its addresses too.
        kinds = {cid: c.contact_type for cid, c in self._channels.visible_to(tenant).items()}
        batch = plan_inbound(MessageToDict(request), kinds)
        outcome = await self._consent.receive(tenant, batch, kinds)
        return pb.ReceiveMessagesResponse(
            message_ids=outcome.message_ids,
            duplicates=outcome.duplicates,
            session_ids=outcome.session_ids,
            statuses_applied=outcome.statuses_applied,
            statuses_unmatched=outcome.statuses_unmatched,
            contacts_updated=outcome.contacts_updated,
            events_applied=outcome.events_applied,
            events_ignored=outcome.events_ignored,
        )

    async def update_contact(
        self, request: pb.UpdateContactInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateContactInfoResponse:
        check_verify_token(context, self._token)
        problems: list[FieldViolation] = []
        info = contact_info(MessageToDict(request.contact), "contact", problems)
        if problems:
            raise invalid(problems)
        contact = await self._store.update_contact(tenant_of(context), info)
        return pb.UpdateContactInfoResponse(contact=contact_to_proto(contact))
