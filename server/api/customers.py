"""CustomerService: contact preferences, contacts, customer objects and events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import grpc
from google.protobuf.json_format import MessageToDict

from cim.v1 import customer_service_pb2 as pb
from cim.v1 import customer_service_pb2_grpc as pb_grpc
from cim.v1 import inbound_pb2
from server.api import field_rules
from server.api.context import tenant_of
from server.domain.contacts import Contact
from server.domain.customer import ContactPrefs, CustomerEvent, CustomerObject, Link, contact_of
from server.domain.models import Page, new_id
from server.domain.paging import CONTACTS, CUSTOMER_EVENTS, CUSTOMER_OBJECTS, PageRequest


class CustomerStore(Protocol):
    async def set_contact_lang(
        self, tenant_id: str, contact_id: str, lang: str
    ) -> ContactPrefs: ...
    async def get_contact(self, tenant_id: str, contact_id: str) -> Contact: ...
    async def contact_langs(self, tenant_id: str, contact_ids: Sequence[str]) -> dict[str, str]: ...
    async def list_contacts(self, tenant_id: str, *, page: PageRequest) -> Page[Contact]: ...
    async def push_customer_object(self, tenant_id: str, obj: CustomerObject) -> CustomerObject: ...
    async def list_customer_objects(
        self, tenant_id: str, contact_id: str, *, page: PageRequest
    ) -> Page[CustomerObject]: ...
    async def push_customer_event(self, tenant_id: str, event: CustomerEvent) -> CustomerEvent: ...
    async def list_customer_events(
        self, tenant_id: str, contact_id: str, *, page: PageRequest
    ) -> Page[CustomerEvent]: ...


def _links(raw: Iterable[pb.DigitalObjectLink]) -> tuple[Link, ...]:
    return tuple(Link(x.link_name, x.link_type, x.link_value) for x in raw)


def _links_proto(links: Iterable[Link]) -> list[pb.DigitalObjectLink]:
    return [
        pb.DigitalObjectLink(link_name=x.name, link_type=x.type, link_value=x.value) for x in links
    ]


def contact_to_proto(c: Contact, lang: str) -> pb.CustomerContact:
    reply = pb.CustomerContact(
        contact_id=c.contact_id,
        contact_type=c.contact_type,
        channel_id=c.channel_id,
        csid=c.csid,
        lane=c.lane,
        lang=lang,
        created_stamp=c.created_at,
        updated_stamp=c.updated_at,
    )
    if c.profile:
        reply.profile.update(dict(c.profile))
    if c.business_profile:
        reply.business_profile.update(dict(c.business_profile))
    return reply


def object_to_proto(o: CustomerObject) -> pb.CustomerObject:
    reply = pb.CustomerObject(
        id=o.id,
        type=o.type,
        links=_links_proto(o.links),
        contact_id=o.contact_id,
        updated_stamp=o.updated_at,
    )
    reply.data.update(dict(o.data))
    return reply


def event_to_proto(e: CustomerEvent) -> pb.CustomerEvent:
    return pb.CustomerEvent(
        event_name=e.event_name,
        id=e.id,
        links=_links_proto(e.links),
        contact_id=e.contact_id,
        created_stamp=e.created_at,
    )


class CustomerServicer(pb_grpc.CustomerServiceServicer):
    def __init__(self, store: CustomerStore) -> None:
        self._store = store

    async def UpdateContactPrefs(
        self, request: pb.UpdateContactPrefsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateContactPrefsResponse:
        field_rules.check(request)
        prefs = await self._store.set_contact_lang(
            tenant_of(context), request.contact_id, request.lang
        )
        event = inbound_pb2.InboundEvent(
            event_code="CONTACT_PREFS_UPDATED",
            event_id=new_id(),
            contact_id=prefs.contact_id,
            contact=inbound_pb2.EventContact(contact_id=prefs.contact_id),
        )
        event.trace.add().update({"lang": prefs.lang})
        return pb.UpdateContactPrefsResponse(results=[event])

    async def GetContact(
        self, request: pb.GetContactRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetContactResponse:
        tenant = tenant_of(context)
        contact = await self._store.get_contact(tenant, request.contact_id)
        langs = await self._store.contact_langs(tenant, [contact.contact_id])
        return pb.GetContactResponse(
            contact=contact_to_proto(contact, langs.get(contact.contact_id, ""))
        )

    async def ListContacts(
        self, request: pb.ListContactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContactsResponse:
        tenant = tenant_of(context)
        wanted = CONTACTS.request(tenant, request.page_size, request.page_token)
        page = await self._store.list_contacts(tenant, page=wanted)
        langs = await self._store.contact_langs(tenant, [c.contact_id for c in page.items])
        return pb.ListContactsResponse(
            results=[contact_to_proto(c, langs.get(c.contact_id, "")) for c in page.items],
            next_page_token=page.next_token,
        )

    async def PushData(
        self, request: pb.PushDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.PushDataResponse:
        field_rules.check(request)
        links = _links(request.links)
        data = MessageToDict(request.data) if request.HasField("data") else {}
        stored = await self._store.push_customer_object(
            tenant_of(context),
            CustomerObject(request.id, request.type, data, links, contact_of(links)),
        )
        reply = pb.PushDataResponse(id=stored.id, type=stored.type, links=_links_proto(links))
        reply.data.update(data)
        return reply

    async def ListCustomerObjects(
        self, request: pb.ListCustomerObjectsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCustomerObjectsResponse:
        tenant = tenant_of(context)
        wanted = CUSTOMER_OBJECTS.request(
            tenant, request.page_size, request.page_token, contact_id=request.contact_id
        )
        page = await self._store.list_customer_objects(tenant, request.contact_id, page=wanted)
        return pb.ListCustomerObjectsResponse(
            results=[object_to_proto(o) for o in page.items], next_page_token=page.next_token
        )

    async def PushEvent(
        self, request: pb.PushEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.PushEventResponse:
        field_rules.check(request)
        links = _links(request.links)
        stored = await self._store.push_customer_event(
            tenant_of(context),
            CustomerEvent(request.event_name, request.id, links, contact_of(links)),
        )
        return pb.PushEventResponse(
            event_name=stored.event_name, id=stored.id, links=_links_proto(stored.links)
        )

    async def ListCustomerEvents(
        self, request: pb.ListCustomerEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCustomerEventsResponse:
        tenant = tenant_of(context)
        wanted = CUSTOMER_EVENTS.request(
            tenant, request.page_size, request.page_token, contact_id=request.contact_id
        )
        page = await self._store.list_customer_events(tenant, request.contact_id, page=wanted)
        return pb.ListCustomerEventsResponse(
            results=[event_to_proto(e) for e in page.items], next_page_token=page.next_token
        )
