"""The inbound webhooks: the public InBoundWrapper and InBoundContact, end to end."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import grpc
import pytest

from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from server.api.context import DEFAULT_TENANT
from server.domain.events import EventType
from support.hub import channel_to
from support.inbound import (
    PHONE,
    TOKEN,
    call,
    contact,
    field_paths,
    inbound_hub,
    live_changes,
    logged,
    receive,
    row_counts,
    seed,
    text_message,
    wrapper,
)

RECEIVE = "/api/v1/message/receive"
CONTACT_INFO = "/api/v1/contact/info"


async def test_seed_wrapper_as_written_opens_a_session_and_streams_events(db_url: str) -> None:
    async with inbound_hub(db_url) as hub, live_changes(hub) as live:
        data = await receive(hub, seed("inbound_wrapper.json"))
        await live.wait_for(
            lambda: (
                bool(live.of_type("ContentEvent"))
                and any(c.event.message == "SESSION_STARTED" for c in live.of_type("SessionEvent"))
            )
        )
        stored = await hub.store.customers.get_contact(DEFAULT_TENANT, "1234567")
        [session_id] = data["sessionIds"]
        session = await hub.store.sessions.get_session(DEFAULT_TENANT, session_id)
        status, listed = await call(hub, "/api/v1/session/messages", {"sessionId": session_id})

    # The reply accounts for every part of the payload.
    assert len(data["messageIds"]) == 1
    assert data["contactsUpdated"] == 1
    assert data["statusesUnmatched"] == 1  # its id names no message this hub sent
    assert data["eventsIgnored"] == 1  # SESSION_ROUTED is the hub's own business
    # A contact, as the channel described it (numbers arrive as strings).
    assert stored.contact_type == "WHATSAPP"
    assert (stored.channel_id, stored.csid, stored.lane) == (
        "wa360:919988776655",
        "91YOURNUMBER",
        "919999998888",
    )
    assert stored.profile == {"name": "John Doe", "phone": "919988776655"}
    assert stored.business_profile["profileId"] == "C34567"
    # An open session for that contact on that channel.
    assert session.state.value == "ACTIVE"
    assert (session.contact_id, session.channel_id) == ("1234567", "wa360:919988776655")
    assert session.address == "+919988776655"  # normalised like outbound destinations
    # The stored message, as a CIM message with the customer and channel filled in.
    assert status == 200, listed
    [item] = listed["results"]
    cim = item["message"]
    assert cim["direction"] == "INBOUND"
    assert cim["body"]["plain"]["markdownText"] == "your-text-message-content"
    header = cim["header"]
    assert header["sender"] == {"id": "1234567", "type": "CUSTOMER", "senderName": "John Doe"}
    assert header["channelData"]["channelCustomerIdentifier"] == "+919988776655"
    assert header["channelData"]["serviceIdentifier"] == "919999998888"
    assert header["customer"]["id"] == "1234567"
    assert header["channelSessionId"] == session_id
    assert header["conversationId"] == session.conversation_id
    assert header["providerMessageId"] == "1234567"
    assert header["timestamp"] == 156753339076
    # And the live stream carried the session start and the message.
    [content] = live.of_type("ContentEvent")
    assert content.event.message == "your-text-message-content"
    assert content.originator_metadata.role == "CONSUMER"
    assert content.conversation_id == session.conversation_id
    assert content.event.data["sessionId"] == session_id
    [started] = [c for c in live.of_type("SessionEvent") if c.event.message == "SESSION_STARTED"]
    assert started.event.data["sessionId"] == session_id
    assert started.sequence < content.sequence


async def test_seed_contact_info_as_written_creates_then_merges(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        status, created = await call(hub, CONTACT_INFO, seed("inbound_contact.json"))
        assert status == 200, created
        update = {"contactId": 1234567, "channelId": "wa360:919988776655"}
        update["businessProfile"] = {"email": "john@example.com"}
        status, merged = await call(hub, CONTACT_INFO, update)
        stored = await hub.store.customers.get_contact(DEFAULT_TENANT, "1234567")
    assert status == 200, merged
    c = created["data"]["contact"]
    assert c["contactId"] == "1234567" and c["contactType"] == "WHATSAPP"
    assert c["businessProfile"] == {
        "name": "John Doe",
        "phone": "919988776655",
        "profileId": "C34567",
    }
    assert c["profile"] == {"name": "John Doe", "phone": "919988776655"}
    assert c["lane"] == "919999998888" and c["csid"] == "91YOURNUMBER"
    # A later report changes what it names and keeps the rest.
    assert stored.business_profile == {
        "email": "john@example.com",
        "name": "John Doe",
        "phone": "919988776655",
        "profileId": "C34567",
    }
    assert stored.contact_type == "WHATSAPP" and stored.created_at <= stored.updated_at
    assert merged["data"]["contact"]["businessProfile"]["email"] == "john@example.com"


@pytest.mark.parametrize("token", [None, "", "wrong-token", TOKEN + "x"], ids=repr)
async def test_a_wrong_or_missing_token_is_401_and_writes_nothing(
    db_url: str, token: str | None
) -> None:
    async with inbound_hub(db_url) as hub:
        before = await row_counts(hub)
        status, body = await call(hub, RECEIVE, seed("inbound_wrapper.json"), token=token)
        contact_status, _ = await call(hub, CONTACT_INFO, seed("inbound_contact.json"), token=token)
        after = await row_counts(hub)
    assert (status, contact_status) == (401, 401), body
    assert body["messageKey"] == "INVALID_VERIFY_TOKEN"
    assert after == before and not any(after.values())


async def test_grpc_callers_present_the_token_as_metadata(db_url: str) -> None:
    request = m.ReceiveMessagesRequest()
    request.contacts.add(contact_id="c1", channel_id="sandbox")
    request.messages.add(id="g1", from_address=PHONE, type="text").text.body = "hi"
    async with inbound_hub(db_url) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ReceiveMessages(request)
        reply = await stub.ReceiveMessages(request, metadata=[("x-verify-token", TOKEN)])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(reply.message_ids) == 1 and len(reply.session_ids) == 1


async def test_an_empty_configured_token_refuses_everyone(db_url: str) -> None:
    async with inbound_hub(db_url, verify_token="") as hub:
        status, _ = await call(hub, RECEIVE, wrapper(text_message("e1")), token="")
    assert status == 401


async def test_the_same_payload_twice_is_one_message(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        first = await receive(hub, seed("inbound_wrapper.json"))
        counts = await row_counts(hub)
        again = await receive(hub, seed("inbound_wrapper.json"))
        twice = await row_counts(hub)
        content = await logged(hub, EventType.CONTENT)
    assert len(first["messageIds"]) == 1 and first.get("duplicates", 0) == 0
    assert again.get("messageIds", []) == [] and again["duplicates"] == 1
    assert twice["inbound_messages"] == counts["inbound_messages"] == 1
    assert twice["sessions"] == 1 and len(content) == 1


async def test_a_repeat_within_one_payload_is_ignored_too(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        data = await receive(hub, wrapper(text_message("same"), text_message("same")))
        counts = await row_counts(hub)
    assert len(data["messageIds"]) == 1 and data["duplicates"] == 1
    assert counts["inbound_messages"] == 1


async def _send(hub: Any, channel: grpc.aio.Channel) -> str:
    sent = await mg.MessagingServiceStub(channel).SendMessage(
        m.SendMessageRequest(
            channel_id="sandbox",
            type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
            to=o.OutboundContact(phone=PHONE),
            text=o.OutboundText(body="your order shipped"),
        )
    )
    return sent.message_id


async def _status_of(channel: grpc.aio.Channel, message_id: str) -> m.Message:
    got = await mg.MessagingServiceStub(channel).GetMessage(
        m.GetMessageRequest(message_id=message_id)
    )
    return got.message


async def _submitted(channel: grpc.aio.Channel, message_id: str) -> m.Message:
    """Wait for the provider's acceptance, so a status does not race the dispatcher."""
    async with asyncio.timeout(10):
        while True:
            sent = await _status_of(channel, message_id)
            if sent.status == d.DELIVERY_STATUS_SUBMITTED:
                return sent
            await asyncio.sleep(0.02)


async def test_statuses_move_the_matching_outbound_message(db_url: str) -> None:
    """``id`` is the hub's message id; ``messageIdExt`` is the provider's message id."""
    # The sandbox would report DELIVERED itself; keep it quiet for the test.
    async with inbound_hub(db_url, sandbox_delivery_delay=60) as hub, channel_to(hub) as ch:
        message_id = await _send(hub, ch)
        sent = await _submitted(ch, message_id)
        by_provider = {"messageIdExt": sent.provider_message_id, "status": "DLVRD"}
        delivered = await receive(hub, wrapper(statuses=[by_provider]))
        after_dlvrd = await _status_of(ch, message_id)
        read = await receive(hub, wrapper(statuses=[{"id": message_id, "status": "READ"}]))
        late = {"id": message_id, "status": "FAILD", "errors": [{"code": 470, "title": "late"}]}
        failed_late = await receive(hub, wrapper(statuses=[late]))
        unknown = await receive(hub, wrapper(statuses=[{"id": "nope", "status": "SENT"}]))
        final = await _status_of(ch, message_id)
    assert delivered["statusesApplied"] == 1
    assert after_dlvrd.status == d.DELIVERY_STATUS_DELIVERED
    assert read["statusesApplied"] == 1
    # A late failure matches but cannot move a read message backwards.
    assert failed_late["statusesApplied"] == 1
    assert unknown["statusesUnmatched"] == 1
    assert final.status == d.DELIVERY_STATUS_READ
    assert [d.DeliveryStatus.Name(h.status) for h in final.history] == [
        "DELIVERY_STATUS_ACCEPTED",
        "DELIVERY_STATUS_SUBMITTED",
        "DELIVERY_STATUS_DELIVERED",
        "DELIVERY_STATUS_READ",
    ]


async def test_a_failed_status_carries_the_channel_error(db_url: str) -> None:
    async with inbound_hub(db_url, sandbox_delivery_delay=60) as hub, channel_to(hub) as ch:
        message_id = await _send(hub, ch)
        await _submitted(ch, message_id)
        errors = [{"code": 470, "title": "outside the support window"}]
        await receive(
            hub, wrapper(statuses=[{"id": message_id, "status": "FAILD", "errors": errors}])
        )
        got = await _status_of(ch, message_id)
    assert got.status == d.DELIVERY_STATUS_FAILED
    assert got.history[-1].reason == "470: outside the support window"


MEDIA = {"link": "https://cdn.example/f", "mime_type": "image/png", "caption": "look"}


@pytest.mark.parametrize(
    ("message", "body"),
    [
        ({"type": "image", "image": MEDIA}, {"media": {"kind": "IMAGE", "caption": "look"}}),
        ({"type": "video", "video": MEDIA}, {"media": {"kind": "VIDEO", "caption": "look"}}),
        ({"type": "audio", "audio": MEDIA}, {"media": {"kind": "AUDIO", "caption": "look"}}),
        ({"type": "voice", "voice": MEDIA}, {"media": {"kind": "AUDIO", "caption": "look"}}),
        ({"type": "document", "document": MEDIA}, {"media": {"kind": "FILE", "caption": "look"}}),
        (
            {"type": "location", "location": {"latitude": 12.5, "longitude": "6.25", "name": "HQ"}},
            {"location": {"latitude": 12.5, "longitude": 6.25, "name": "HQ"}},
        ),
        (
            {"type": "form", "form": {"reply_id": "ACCEPT", "reply_title": "I Accept"}},
            {"plain": {"markdownText": "I Accept"}},
        ),
        (
            {
                "type": "referral",
                "referral": {"sourceUrl": "https://ad", "title": "Ad", "body": "b"},
            },
            {"url": {"url": "https://ad", "title": "Ad", "description": "b"}},
        ),
    ],
    ids=["image", "video", "audio", "voice", "document", "location", "form", "referral"],
)
async def test_each_message_type_becomes_its_cim_body(
    db_url: str, message: dict[str, Any], body: dict[str, Any]
) -> None:
    async with inbound_hub(db_url) as hub:
        data = await receive(hub, wrapper({"id": "t1", "from": PHONE, **message}))
        _, listed = await call(
            hub, "/api/v1/session/messages", {"sessionId": data["sessionIds"][0]}
        )
    got = listed["results"][0]["message"]["body"]
    kind = next(iter(body))
    for key, value in body[kind].items():
        assert got[kind][key] == value, (key, got)
    if kind == "media":
        assert got["media"]["attachment"]["mediaUrl"] == MEDIA["link"]
        assert got["media"]["attachment"]["mimeType"] == "image/png"


def _bad(mutate: Any) -> dict[str, Any]:
    payload = copy.deepcopy(seed("inbound_wrapper.json"))
    mutate(payload)
    return payload


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (
            _bad(lambda p: p["messages"][0].pop("from") and p["messages"][0].pop("contactId")),
            ["messages[0].from"],
        ),
        (
            _bad(lambda p: p["messages"][0].pop("id") and p["messages"][0].pop("messageIdExt")),
            ["messages[0].id"],
        ),
        (_bad(lambda p: p["messages"][0].update(type="hologram")), ["messages[0].type"]),
        (_bad(lambda p: p["messages"][0]["text"].pop("body")), ["messages[0].text.body"]),
        (_bad(lambda p: p.update(contacts=[])), ["messages[0].contactId"]),
        (_bad(lambda p: p["contacts"][0].pop("channelId")), ["contacts[0].channelId"]),
        (_bad(lambda p: p["statuses"][0].update(status="LOST")), ["statuses[0].status"]),
        (_bad(lambda p: p["messages"][0].update(colour="blue")), ["messages[0].colour"]),
        # Read as keypad digits, +1800FLOWERS would be +18003569377.
        (_bad(lambda p: p["messages"][0].update({"from": "+1800FLOWERS"})), ["messages[0].from"]),
    ],
    ids=[
        "no-sender",
        "no-id",
        "bad-type",
        "no-text",
        "no-contact",
        "no-channel",
        "bad-status",
        "unknown-field",
        "letters-sender",
    ],
)
async def test_bad_payloads_are_400_with_field_paths_and_write_nothing(
    db_url: str, payload: dict[str, Any], fields: list[str]
) -> None:
    async with inbound_hub(db_url) as hub:
        status, body = await call(hub, RECEIVE, payload)
        counts = await row_counts(hub)
    assert status == 400, body
    assert set(fields) <= set(field_paths(body)), body
    assert not any(counts.values()), counts


async def test_typing_and_read_become_chat_state_and_accept_status_events(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        data = await receive(hub, wrapper(text_message("m1")))
        session_id, [message_id] = data["sessionIds"][0], data["messageIds"]
        events = [
            {"eventCode": "COMPOSING", "sessionId": session_id, "type": "INBOUND"},
            {
                "eventCode": "TYPING",
                "contactId": "c1",
                "type": "OUTBOUND",
                "route": {"senderCode": "agent-7"},
            },
            {
                "eventCode": "ACCEPT",
                "sessionId": session_id,
                "messageId": message_id,
                "type": "OUTBOUND",
                "session": {"agent": "agent-7"},
            },
            {
                "eventCode": "READ",
                "sessionId": session_id,
                "messageId": message_id,
                "type": "OUTBOUND",
                "session": {"agent": "agent-7"},
            },
            {"eventCode": "COMPOSING", "sessionId": "no-such-session"},
            {"eventCode": "SESSION_ROUTED", "sessionId": session_id},
        ]
        outcome = await receive(hub, wrapper(events=events))
        chat = await logged(hub, EventType.CHAT_STATE)
        accept = await logged(hub, EventType.ACCEPT_STATUS)
    assert outcome["eventsApplied"] == 4 and outcome["eventsIgnored"] == 2
    assert [(e.event.message, e.event.originator_role, e.event.originator_id) for e in chat] == [
        ("COMPOSING", "CONSUMER", "c1"),
        ("COMPOSING", "AGENT", "agent-7"),
    ]
    assert [e.event.data["chatState"] for e in chat] == ["COMPOSING", "COMPOSING"]
    assert [(e.event.message, e.event.message_id) for e in accept] == [
        ("ACCEPT", message_id),
        ("READ", message_id),
    ]
    assert all(e.event.originator_role == "AGENT" for e in accept)
    assert {e.event.data["sessionId"] for e in [*chat, *accept]} == {session_id}


async def test_messages_of_one_contact_share_a_session_and_two_contacts_do_not(
    db_url: str,
) -> None:
    other = contact("c2", phone="+447700900999")
    async with inbound_hub(db_url) as hub:
        first = await receive(hub, wrapper(text_message("a1"), text_message("a2")))
        second = await receive(
            hub,
            wrapper(
                text_message("b1", sender="+447700900999", contact_id="c2"),
                contacts=[contact(), other],
            ),
        )
    assert len(set(first["sessionIds"])) == 1
    assert second["sessionIds"][0] not in first["sessionIds"]
