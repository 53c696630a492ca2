"""Third-party activities: published live on active conversations, kept in history always."""

from __future__ import annotations

import copy
from typing import Any

import grpc
import pytest

from cim.v1 import cim_message_pb2 as c
from cim.v1 import session_service_pb2 as s
from cim.v1 import session_service_pb2_grpc as sg
from server.api.context import DEFAULT_TENANT
from server.domain.events import EventType
from support.hub import channel_to
from support.inbound import (
    call,
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

ACTIVITIES = "/api/v1/conversation/activities"


def activity(**header: Any) -> dict[str, Any]:
    return {
        "id": header.pop("id", None),
        "header": {"sender": {"id": "crm-app", "type": "APP", "senderName": "CRM"}, **header},
        "body": {
            "thirdPartyActivity": {
                "type": "CALL_RECORDING",
                "markdownText": "Call recorded",
                "data": {"url": "https://rec.example/1", "seconds": 42},
            }
        },
    }


async def _open(hub: Any, ext: str = "m1") -> tuple[str, str]:
    data = await receive(hub, wrapper(text_message(ext)))
    session = await hub.store.sessions.get_session(DEFAULT_TENANT, data["sessionIds"][0])
    return session.id, session.conversation_id


async def test_an_activity_on_an_active_conversation_reaches_live_subscribers(
    db_url: str,
) -> None:
    async with inbound_hub(db_url) as hub, live_changes(hub) as live:
        session_id, conversation_id = await _open(hub)
        status, body = await call(hub, ACTIVITIES, activity(channelSessionId=session_id))
        await live.wait_for(lambda: bool(live.of_type("ThirdPartyActivityEvent")))
        _, listed = await call(hub, f"{ACTIVITIES}?conversationId={conversation_id}", method="GET")
    assert status == 200, body
    stored = body["data"]["activity"]
    assert stored["published"] is True
    assert stored["conversationId"] == conversation_id and stored["customerId"] == "c1"
    [change] = live.of_type("ThirdPartyActivityEvent")
    assert change.conversation_id == conversation_id
    assert change.event.message_id == stored["id"]
    assert change.event.message == "Call recorded"
    assert change.originator_id == "crm-app" and change.originator_metadata.role == "THIRD_PARTY"
    cim = change.event.data["cimMessage"]
    assert cim["body"]["thirdPartyActivity"]["data"]["url"] == "https://rec.example/1"
    # It is part of the conversation's history too.
    assert [a["id"] for a in listed["results"]] == [stored["id"]]
    assert listed["results"][0]["message"]["body"]["thirdPartyActivity"]["type"] == (
        "CALL_RECORDING"
    )


async def test_an_activity_on_an_inactive_conversation_is_stored_not_streamed(
    db_url: str,
) -> None:
    async with inbound_hub(db_url) as hub:
        session_id, conversation_id = await _open(hub)
        assert (await call(hub, "/api/v1/session/close", {"sessionId": session_id}))[0] == 200
        async with live_changes(hub) as live:
            status, body = await call(hub, ACTIVITIES, activity(conversationId=conversation_id))
            # Something that is published, to show the stream is alive and ordered.
            await receive(hub, wrapper(text_message("m2")))
            await live.wait_for(lambda: bool(live.of_type("ContentEvent")))
        _, listed = await call(hub, f"{ACTIVITIES}?conversationId={conversation_id}", method="GET")
        logged_activities = await logged(hub, EventType.THIRD_PARTY_ACTIVITY)
    assert status == 200, body
    assert body["data"]["activity"].get("published", False) is False
    assert live.of_type("ThirdPartyActivityEvent") == []
    assert logged_activities == []
    [kept] = listed["results"]
    assert kept["id"] == body["data"]["activity"]["id"]
    assert kept["conversationId"] == conversation_id and kept.get("published", False) is False


async def test_stand_alone_and_channel_session_activities_are_listed_per_customer(
    db_url: str,
) -> None:
    async with inbound_hub(db_url) as hub:
        session_id, conversation_id = await _open(hub)
        _, standalone = await call(hub, ACTIVITIES, activity(customer={"id": "c1"}))
        _, by_session = await call(hub, ACTIVITIES, activity(channelSessionId=session_id))
        _, other = await call(hub, ACTIVITIES, activity(customer={"id": "someone-else"}))
        _, for_c1 = await call(hub, f"{ACTIVITIES}?customerId=c1", method="GET")
        _, for_conv = await call(
            hub, f"{ACTIVITIES}?conversationId={conversation_id}", method="GET"
        )
    alone = standalone["data"]["activity"]
    # Stand-alone: tied to the customer, to no conversation, and never published.
    assert alone.get("conversationId", "") == "" and alone.get("published", False) is False
    session_based = by_session["data"]["activity"]
    assert session_based["channelSessionId"] == session_id and session_based["published"]
    # Newest first, per customer and per conversation.
    assert [a["id"] for a in for_c1["results"]] == [session_based["id"], alone["id"]]
    assert [a["id"] for a in for_conv["results"]] == [session_based["id"]]
    assert other["data"]["activity"]["customerId"] == "someone-else"


async def test_activities_page_newest_first(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        pushed = []
        for i in range(5):
            _, body = await call(hub, ACTIVITIES, activity(customer={"id": "c7"}, id=f"act-{i}"))
            pushed.append(body["data"]["activity"]["id"])
        seen: list[str] = []
        token = ""
        for _ in range(5):
            query = f"{ACTIVITIES}?customerId=c7&pageSize=2" + (
                f"&pageToken={token}" if token else ""
            )
            _, page = await call(hub, query, method="GET")
            seen.extend(a["id"] for a in page["results"])
            token = page["meta"].get("nextPageToken", "")
            if not token:
                break
    assert seen == list(reversed(pushed))


def _cim_seed_as_activity() -> dict[str, Any]:
    return seed("cim_message.json")


def _without(path: str) -> dict[str, Any]:
    doc = copy.deepcopy(activity(customer={"id": "c1"}))
    if path == "sender":
        doc["header"].pop("sender")
    elif path == "body":
        doc.pop("body")
    else:
        doc["header"].pop("customer")
    return doc


ANCHORS = [
    "activity.header.customer",
    "activity.header.channelSessionId",
    "activity.header.conversationId",
]


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (_without("sender"), ["activity.header.sender"]),
        (_without("body"), ["activity.body"]),
        (_without("anchor"), ANCHORS),
        (_cim_seed_as_activity(), ["activity.body", *ANCHORS]),
    ],
    ids=["no-sender", "no-body", "no-customer-session-or-conversation", "cim-seed"],
)
async def test_invalid_activities_are_400_with_field_paths(
    db_url: str, payload: dict[str, Any], fields: list[str]
) -> None:
    async with inbound_hub(db_url) as hub:
        status, body = await call(hub, ACTIVITIES, payload)
        counts = await row_counts(hub)
    assert status == 400, body
    assert field_paths(body) == fields
    assert counts["activities"] == 0 and counts["events"] == 0


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"conversationId": "7d3c3e8e-0000-0000-0000-000000000000"}, "CONVERSATION_NOT_FOUND"),
        ({"channelSessionId": "no-such-session"}, "SESSION_NOT_FOUND"),
    ],
    ids=["conversation", "session"],
)
async def test_unknown_anchors_are_404(db_url: str, header: dict[str, str], reason: str) -> None:
    async with inbound_hub(db_url) as hub:
        status, body = await call(hub, ACTIVITIES, activity(**header))
        counts = await row_counts(hub)
    assert status == 404 and body["messageKey"] == reason
    assert counts["activities"] == 0


async def test_pushing_the_same_activity_twice_publishes_it_once(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        session_id, _ = await _open(hub)
        first = await call(hub, ACTIVITIES, activity(channelSessionId=session_id, id="a-1"))
        again = await call(hub, ACTIVITIES, activity(channelSessionId=session_id, id="a-1"))
        counts = await row_counts(hub)
        published = await logged(hub, EventType.THIRD_PARTY_ACTIVITY)
    assert first[0] == again[0] == 200
    assert first[1]["data"] == again[1]["data"]
    assert counts["activities"] == 1 and len(published) == 1


async def test_activities_over_grpc(db_url: str) -> None:
    async with inbound_hub(db_url) as hub, channel_to(hub) as channel:
        _, conversation_id = await _open(hub)
        stub = sg.SessionServiceStub(channel)
        message = c.CimMessage(
            header=c.MessageHeader(
                sender=c.Sender(id="bot-1", type=c.SENDER_TYPE_BOT),
                conversation_id=conversation_id,
            ),
            body=c.MessageBody(plain=c.PlainBody(markdown_text="handing over")),
        )
        pushed = await stub.PushActivity(s.PushActivityRequest(activity=message))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PushActivity(s.PushActivityRequest(activity=c.CimMessage()))
        events = await logged(hub, EventType.THIRD_PARTY_ACTIVITY)
    assert pushed.activity.published and pushed.activity.id
    assert pushed.activity.message.body.plain.markdown_text == "handing over"
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [event] = events
    assert event.event.originator_role == "BOT" and event.event.message == "handing over"
