"""Every list pages with one opaque page token, bound to its list, tenant and filter.

A client that passes back what it got walks the whole list once, with no row
twice and none left out, also while rows are added; a token taken to another
list, filter or tenant, or altered, is INVALID_ARGUMENT with the field named.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from sqlalchemy import delete

from cim.v1 import config_service_pb2 as cfg
from cim.v1 import config_service_pb2_grpc as cfg_grpc
from cim.v1 import consent_service_pb2 as con
from cim.v1 import consent_service_pb2_grpc as con_grpc
from cim.v1 import customer_service_pb2 as cust
from cim.v1 import customer_service_pb2_grpc as cust_grpc
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from cim.v1 import session_service_pb2 as s
from cim.v1 import session_service_pb2_grpc as sg
from cim.v1 import webhook_service_pb2 as w
from cim.v1 import webhook_service_pb2_grpc as wg
from server.app import Hub
from server.domain import paging
from server.domain.contacts import ContactInfo
from server.domain.customer import CustomerEvent, CustomerObject, GlobalVar, Link
from server.domain.errors import Code, DomainError
from server.domain.paging import CONTACTS, GLOBAL_VARS, MESSAGES, SESSIONS, page_of
from server.storage.customer_schema import contacts
from server.storage.store import SqlStore
from support.clock import FakeClock
from support.hub import AUTH_HEADERS, channel_to, rest_call
from support.inbound import call, contact, inbound_hub, receive, text_message, wrapper

SIZE = 2
ROWS = 5
TENANT = "default"
# Ids as long as the API lets them be: far more than a page token could carry.
LONG = "x" * 250


def _long_id(n: int) -> str:
    return f"{LONG}{n:03d}"[-256:]


# -- the token format --------------------------------------------------------------


def _refused(request: Callable[[], object]) -> DomainError:
    with pytest.raises(DomainError) as caught:
        request()
    error = caught.value
    assert error.code is Code.INVALID_ARGUMENT
    assert error.reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in error.violations] == ["pageToken"]
    return error


def test_a_token_names_its_position_and_comes_back_to_the_list_that_issued_it() -> None:
    first = MESSAGES.request(TENANT, 2, "", status="SENT")
    token = first.next_token((1_800_000_000_123, "7f0c4a86-1a0e-4f55-9d6c-0d1c8f3d2e11"))
    again = MESSAGES.request(TENANT, 2, token, status="SENT")
    assert again.after == (1_800_000_000_123, "7f0c4a86-1a0e-4f55-9d6c-0d1c8f3d2e11")
    assert len(token) <= paging.MAX_TOKEN_CHARS
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_token_is_refused_by_another_list_filter_or_tenant() -> None:
    token = MESSAGES.request(TENANT, 2, "").next_token((1, "a"))
    _refused(lambda: SESSIONS.request(TENANT, 2, token))  # same shape, other list
    _refused(lambda: MESSAGES.request(TENANT, 2, token, status="FAILED"))
    _refused(lambda: MESSAGES.request("another-tenant", 2, token))


def test_an_altered_or_foreign_token_is_refused() -> None:
    token = MESSAGES.request(TENANT, 2, "").next_token((1_800_000_000_000, "abc"))
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[3] ^= 0x01  # one bit of the position
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    newer = base64.urlsafe_b64encode(bytes([paging.VERSION + 1]) + bytes(raw[1:])).decode()
    for bad in (
        altered,
        token[:-2],
        newer.rstrip("="),
        "1800000000000:abc",  # the formats of before
        "10:0",
        "not base64!",
        "A" * (paging.MAX_TOKEN_CHARS + 1),
    ):
        _refused(lambda bad=bad: MESSAGES.request(TENANT, 2, bad))  # type: ignore[misc]


def test_a_position_of_the_wrong_shape_is_refused_even_with_a_good_tag() -> None:
    # The tag is a checksum anyone can compute: what a position holds is checked too.
    scope = MESSAGES.request(TENANT, 2, "").scope
    for forged in (("now", "abc"), (1, 2), (1,), (-1, "abc"), (1, "a\x00b"), (True, "a")):
        token = paging.encode(scope, forged)
        _refused(lambda token=token: MESSAGES.request(TENANT, 2, token))  # type: ignore[misc]


def test_page_size_rules_are_kept() -> None:
    assert MESSAGES.request(TENANT, 0, "").size == paging.DEFAULT_PAGE_SIZE
    assert MESSAGES.request(TENANT, 10_000, "").size == paging.MAX_PAGE_SIZE
    with pytest.raises(DomainError) as caught:
        MESSAGES.request(TENANT, -1, "")
    assert [v.field for v in caught.value.violations] == ["pageSize"]


# -- lists read whole ----------------------------------------------------------------


def _walk(items: list[str], between: Callable[[int], None] = lambda _n: None) -> list[str]:
    seen: list[str] = []
    token = ""
    for n in range(100):
        page = page_of(items, str, GLOBAL_VARS.request(TENANT, SIZE, token))
        seen.extend(page.items)
        token = page.next_token
        if not token:
            return seen
        between(n)
    raise AssertionError("the list never ended")


def test_a_list_read_whole_survives_inserts_and_a_deleted_last_item() -> None:
    items = [f"k{i}" for i in range(7)]
    assert _walk(list(items)) == items

    live = list(items)

    def insert_before(n: int) -> None:
        live.insert(0, f"a{n}")  # sorts before everything listed so far

    seen = _walk(live, insert_before)
    assert seen == items  # none twice, none left out

    live = list(items)

    def delete_last_listed(n: int) -> None:
        if n == 0:
            live.remove("k1")

    assert _walk(live, delete_last_listed) == ["k0", "k1", "k2", "k3", "k4", "k5", "k6"]


# -- every list of the API, on both engines ------------------------------------------


@dataclass(frozen=True)
class ApiList:
    name: str
    # (page size, page token) -> (ids on the page, next token)
    page: Callable[[int, str], Awaitable[tuple[list[str], str]]]


async def _walk_api(listing: ApiList) -> list[str]:
    seen: list[str] = []
    token = ""
    for _ in range(200):
        ids, token = await listing.page(SIZE, token)
        assert len(ids) <= SIZE
        seen.extend(ids)
        if not token:
            return seen
    raise AssertionError(f"{listing.name} never ended")


def _lists(channel: grpc.aio.Channel, session_id: str) -> list[ApiList]:
    msg = mg.MessagingServiceStub(channel)
    ses = sg.SessionServiceStub(channel)
    consents = con_grpc.ConsentServiceStub(channel)
    hooks = wg.WebhookServiceStub(channel)
    customers = cust_grpc.CustomerServiceStub(channel)
    config = cfg_grpc.ConfigServiceStub(channel)

    async def messages(size: int, token: str) -> tuple[list[str], str]:
        r = await msg.ListMessages(m.ListMessagesRequest(page_size=size, page_token=token))
        return [x.id for x in r.results], r.next_page_token

    async def sessions(size: int, token: str) -> tuple[list[str], str]:
        r = await ses.ListSessions(s.ListSessionsRequest(page_size=size, page_token=token))
        return [x.id for x in r.results], r.next_page_token

    async def session_messages(size: int, token: str) -> tuple[list[str], str]:
        r = await ses.ListSessionMessages(
            s.ListSessionMessagesRequest(session_id=session_id, page_size=size, page_token=token)
        )
        return [x.message.id for x in r.results], r.next_page_token

    async def activities(size: int, token: str) -> tuple[list[str], str]:
        r = await ses.ListActivities(s.ListActivitiesRequest(page_size=size, page_token=token))
        return [x.id for x in r.results], r.next_page_token

    async def consent_entries(size: int, token: str) -> tuple[list[str], str]:
        r = await consents.ListConsents(con.ListConsentsRequest(page_size=size, page_token=token))
        return [f"{x.channel_type}/{x.address}/{x.scope}" for x in r.results], r.next_page_token

    async def dead_letters(size: int, token: str) -> tuple[list[str], str]:
        r = await hooks.ListDeadLetters(w.ListDeadLettersRequest(page_size=size, page_token=token))
        return [x.delivery_id for x in r.results], r.next_page_token

    async def contact_list(size: int, token: str) -> tuple[list[str], str]:
        r = await customers.ListContacts(cust.ListContactsRequest(page_size=size, page_token=token))
        return [x.contact_id for x in r.results], r.next_page_token

    async def objects(size: int, token: str) -> tuple[list[str], str]:
        r = await customers.ListCustomerObjects(
            cust.ListCustomerObjectsRequest(contact_id="owner", page_size=size, page_token=token)
        )
        return [x.id for x in r.results], r.next_page_token

    async def events(size: int, token: str) -> tuple[list[str], str]:
        r = await customers.ListCustomerEvents(
            cust.ListCustomerEventsRequest(contact_id="owner", page_size=size, page_token=token)
        )
        return [x.id for x in r.results], r.next_page_token

    async def global_vars(size: int, token: str) -> tuple[list[str], str]:
        r = await config.ListGlobalVars(cfg.ListGlobalVarsRequest(page_size=size, page_token=token))
        return [f"{x.channel_id}:{x.key}" for x in r.results], r.next_page_token

    async def templates(size: int, token: str) -> tuple[list[str], str]:
        r = await config.ListTemplates(cfg.ListTemplatesRequest(page_size=size, page_token=token))
        return [x.id for x in r.results], r.next_page_token

    return [
        ApiList("messages", messages),
        ApiList("sessions", sessions),
        ApiList("session messages", session_messages),
        ApiList("activities", activities),
        ApiList("consents", consent_entries),
        ApiList("dead letters", dead_letters),
        ApiList("contacts", contact_list),
        ApiList("customer objects", objects),
        ApiList("customer events", events),
        ApiList("global variables", global_vars),
        ApiList("templates", templates),
    ]


def _closed_port() -> int:
    """A loopback port nothing listens on: a webhook posted there fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _seed(hub: Hub) -> str:
    """ROWS or more rows in every list; returns the id of a session with ROWS messages."""
    store = hub.store
    notify = f"http://127.0.0.1:{_closed_port()}/receipts"
    for n in range(ROWS):
        status, body = await rest_call(
            hub,
            "POST",
            "/api/v2/message/send",
            AUTH_HEADERS,
            {
                "channel": "sms",
                "from": "CNNECT",
                "to": [{"msisdn": [f"+4479111{n:05d}"]}],
                "content": {"type": "text", "text": "hi"},
                "notifyUrl": notify,
                "requestedReceipts": ["DELIVERED"],
            },
        )
        assert status == 202, body
    session_id = ""
    for n in range(ROWS):
        data = await receive(hub, wrapper(text_message(f"same-{n}", body=f"m{n}")))
        session_id = data["sessionIds"][0]
        phone = f"+44770090{n:04d}"
        await receive(
            hub,
            wrapper(
                text_message(f"other-{n}", sender=phone, contact_id=f"c-{n}"),
                contacts=[contact(f"c-{n}", phone=phone)],
            ),
        )
        status, body = await call(
            hub,
            "/api/v1/conversation/activities",
            {
                "header": {"sender": {"id": "crm", "type": "APP"}, "customer": {"id": "a"}},
                "body": {"thirdPartyActivity": {"type": "NOTE", "markdownText": f"n{n}"}},
            },
        )
        assert status == 200, body
        status, body = await rest_call(
            hub,
            "POST",
            f"/api/v1/consents/sms/%2B4479222{n:05d}",
            AUTH_HEADERS,
            {"state": "OPTED_OUT"},
        )
        assert status == 200, body
        owner = [Link("customer", "CONTACT", "owner")]
        await store.customers.push_customer_object(
            TENANT, CustomerObject(_long_id(n), "CUSTOMER", {"n": n}, owner, "owner")
        )
        await store.customers.push_customer_event(
            TENANT, CustomerEvent("ORDER", f"e{n}", owner, "owner")
        )
        await store.config.set_global_var(TENANT, GlobalVar(f"v{n}", "x", "", ""))
        await store.config.set_global_var(TENANT, GlobalVar(f"v{n}", "y", "", "sandbox"))
        status, body = await rest_call(
            hub,
            "POST",
            "/api/v1/config/tmpl/hsm",
            AUTH_HEADERS,
            {"code": f"T{n}", "lang": "en", "body": "x"},
        )
        assert status in (200, 201), body
    # Contacts whose ids a token cannot carry, created together: one creation time.
    await asyncio.gather(
        *(store.customers.update_contact(TENANT, ContactInfo(_long_id(n))) for n in range(ROWS))
    )
    return str(session_id)


async def test_every_list_walks_every_row_once_across_pages(db_url: str) -> None:
    async with (
        inbound_hub(db_url, webhook_max_age_ms=1) as hub,
        channel_to(hub) as channel,
    ):
        session_id = await _seed(hub)
        lists = _lists(channel, session_id)
        dead_letters = next(x for x in lists if x.name == "dead letters")

        async def all_dead() -> bool:
            return len((await dead_letters.page(500, ""))[0]) >= ROWS

        async with asyncio.timeout(20):
            while not await all_dead():  # noqa: ASYNC110 - the sender works in the background
                await asyncio.sleep(0.05)
        for listing in lists:
            whole, more = await listing.page(500, "")
            assert not more and len(whole) >= ROWS, listing.name
            walked = await _walk_api(listing)
            assert walked == whole, listing.name  # in order, none twice, none left out
        contact_ids = (await lists[6].page(500, ""))[0]
        assert {_long_id(n) for n in range(ROWS)} <= set(contact_ids)


async def test_a_token_taken_elsewhere_or_altered_is_refused_with_its_field(
    db_url: str,
) -> None:
    async with inbound_hub(db_url) as hub:
        for n in range(3):
            await hub.store.customers.update_contact(TENANT, ContactInfo(f"c{n}"))
        _, first = await rest_call(hub, "GET", "/api/v1/contacts?pageSize=1", AUTH_HEADERS)
        token = first["meta"]["nextPageToken"]
        tampered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
        answers = [
            await rest_call(hub, "GET", f"/api/v1/messages?pageToken={token}", AUTH_HEADERS),
            await rest_call(hub, "GET", f"/api/v1/contacts?pageToken={tampered}", AUTH_HEADERS),
        ]
        async with channel_to(hub) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await sg.SessionServiceStub(channel).ListSessions(
                    s.ListSessionsRequest(page_token=token)
                )
    for status, body in answers:
        assert status == 400, body
        assert body["messageKey"] == "INVALID_PAGE_TOKEN"
        assert [e["field"] for e in body["errors"]] == ["pageToken"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- rows added while a client walks a list -----------------------------------------


@asynccontextmanager
async def _store(db_url: str, clock: FakeClock) -> AsyncIterator[SqlStore]:
    store = await SqlStore.open(db_url, lambda _events: None, clock=clock)
    try:
        yield store
    finally:
        await store.close()


async def _contacts_walk(store: SqlStore, between: Callable[[int], Awaitable[None]]) -> list[str]:
    seen: list[str] = []
    token = ""
    for n in range(100):
        page = await store.customers.list_contacts(
            TENANT, page=CONTACTS.request(TENANT, SIZE, token)
        )
        seen.extend(c.contact_id for c in page.items)
        token = page.next_token
        if not token:
            return seen
        await between(n)
    raise AssertionError("the list never ended")


async def test_contacts_created_together_page_through_inserts_and_a_deleted_row(
    db_url: str,
) -> None:
    clock = FakeClock()
    async with _store(db_url, clock) as store:
        # One creation time for all: the order within it is the 256-character id.
        originals = [_long_id(n) for n in range(1, 10, 2)]
        for contact_id in originals:
            await store.customers.update_contact(TENANT, ContactInfo(contact_id))

        async def add_around(n: int) -> None:
            # Same creation time, ids sorting before and after the page's last row.
            for contact_id in (_long_id(2 * n), _long_id(2 * n + 4)):
                await store.customers.update_contact(TENANT, ContactInfo(contact_id))

        seen = await _contacts_walk(store, add_around)
        assert len(seen) == len(set(seen))  # none twice
        assert set(originals) <= set(seen)  # none left out
        assert seen == sorted(seen)

        clock.advance(1_000)
        later = [f"later-{n}" for n in range(3)]
        for contact_id in later:
            await store.customers.update_contact(TENANT, ContactInfo(contact_id))
        everything = await _contacts_walk(store, _nothing)

        async def delete_last_listed(n: int) -> None:
            if n == 0:
                async with store.engine.begin() as conn:
                    await conn.execute(
                        delete(contacts).where(contacts.c.contact_id == everything[SIZE - 1])
                    )

        after_delete = await _contacts_walk(store, delete_last_listed)
    assert everything[-3:] == later
    assert after_delete == everything  # the deleted row was listed before it went


async def _nothing(_n: int) -> None:
    return None


async def test_messages_sent_while_a_client_walks_the_list_appear_once_at_most(
    db_url: str,
) -> None:
    async with inbound_hub(db_url) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        for n in range(ROWS):
            await _send(stub, n)
        before = [x.id for x in (await stub.ListMessages(m.ListMessagesRequest())).results]
        seen: list[str] = []
        token = ""
        for n in range(100):
            reply = await stub.ListMessages(m.ListMessagesRequest(page_size=SIZE, page_token=token))
            seen.extend(x.id for x in reply.results)
            token = reply.next_page_token
            if not token:
                break
            await _send(stub, 100 + n)  # newer: before the position, so not on a later page
    assert seen == before


async def _send(stub: Any, n: int) -> None:
    await stub.SendMessage(
        m.SendMessageRequest(
            channel_id="sandbox",
            type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
            to=o.OutboundContact(phone=f"+4477009{n:05d}"),
            text=o.OutboundText(body=f"n{n}"),
        )
    )
