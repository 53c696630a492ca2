"""Sessions over the public API: the state machine, inactivity, routing, history and
the conversation state every change reports."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from server.api.context import DEFAULT_TENANT
from server.domain.errors import Code, DomainError
from server.domain.events import CONVERSATION_NOTIFICATION, EventType
from server.domain.models import SessionState
from server.domain.sessions import check_transition
from server.storage.tx import now_ms
from support.clock import FakeClock
from support.hub import channel_to
from support.inbound import (
    PHONE,
    call,
    contact,
    inbound_hub,
    live_changes,
    logged,
    receive,
    seed,
    text_message,
    wrapper,
)

_ids = itertools.count()


async def _open(hub: Any) -> str:
    data = await receive(hub, wrapper(text_message(f"m{next(_ids)}")))
    return str(data["sessionIds"][0])


async def _act(hub: Any, action: str, session_id: str) -> tuple[int, dict[str, Any]]:
    if action == "message":
        status, body = await call(
            hub, "/api/v1/message/receive", wrapper(text_message(f"m{next(_ids)}"))
        )
        return status, body
    if action == "route":
        return await call(hub, "/api/v1/session/routing", {"sessionId": session_id, "queue": "q"})
    return await call(hub, f"/api/v1/session/{action}", {"sessionId": session_id})


# -- the state machine -----------------------------------------------------------------


@pytest.mark.parametrize("current", list(SessionState))
@pytest.mark.parametrize("target", list(SessionState))
def test_every_transition_of_the_state_machine(current: SessionState, target: SessionState) -> None:
    allowed = {
        (SessionState.ACTIVE, SessionState.RESOLVED),
        (SessionState.ACTIVE, SessionState.CLOSED),
        (SessionState.RESOLVED, SessionState.ACTIVE),
        (SessionState.RESOLVED, SessionState.CLOSED),
    }
    if (current, target) in allowed:
        check_transition(current, target)
        return
    with pytest.raises(DomainError) as refused:
        check_transition(current, target)
    assert refused.value.code is Code.FAILED_PRECONDITION
    assert refused.value.reason == f"SESSION_{current.value}"


# (state to start from, action, HTTP status, resulting state or refusal reason)
TRANSITIONS = [
    ("ACTIVE", "resolve", 200, "RESOLVED"),
    ("ACTIVE", "close", 200, "CLOSED"),
    ("ACTIVE", "message", 200, "ACTIVE"),
    ("RESOLVED", "resolve", 400, "SESSION_RESOLVED"),
    ("RESOLVED", "close", 200, "CLOSED"),
    ("RESOLVED", "message", 200, "ACTIVE"),
    ("CLOSED", "resolve", 400, "SESSION_CLOSED"),
    ("CLOSED", "close", 400, "SESSION_CLOSED"),
    ("CLOSED", "route", 400, "SESSION_CLOSED"),
    ("CLOSED", "message", 200, "CLOSED"),
]


@pytest.mark.parametrize(
    ("start", "action", "http", "outcome"),
    TRANSITIONS,
    ids=[f"{s.lower()}-{a}" for s, a, _, _ in TRANSITIONS],
)
async def test_session_transitions_over_rest(
    db_url: str, start: str, action: str, http: int, outcome: str
) -> None:
    async with inbound_hub(db_url) as hub:
        session_id = await _open(hub)
        if start == "RESOLVED":
            assert (await _act(hub, "resolve", session_id))[0] == 200
        if start == "CLOSED":
            assert (await _act(hub, "close", session_id))[0] == 200
        status, body = await _act(hub, action, session_id)
        after = await hub.store.sessions.get_session(DEFAULT_TENANT, session_id)
        codes = [e.event.message for e in await logged(hub, EventType.SESSION)]
    assert status == http, body
    if http == 400:
        # Refusals say why, and change nothing.
        assert body["statusKey"] == "FAILED_PRECONDITION"
        assert body["messageKey"] == outcome and body["message"]
        assert after.state.value == start
        return
    assert after.state.value == outcome
    if action == "message" and start == "CLOSED":
        # A closed session stays closed; the customer's message opens a new one.
        assert body["data"]["sessionIds"] != [session_id]
        assert codes.count("SESSION_STARTED") == 2
    elif action == "message":
        assert body["data"]["sessionIds"] == [session_id]
    if start == "RESOLVED" and action == "message":
        assert codes[-1] == "SESSION_REACTIVATED"
    if action in ("resolve", "close"):
        assert body["data"]["session"]["state"] == outcome
        assert codes[-1] == f"SESSION_{outcome}"


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/api/v1/session/close", {}),
        ("/api/v1/session/resolve", {}),
        ("/api/v1/session/routing", {"queue": "q"}),
        ("/api/v1/session/messages", {}),
    ],
    ids=["close", "resolve", "routing", "messages"],
)
async def test_unknown_sessions_are_404(db_url: str, path: str, extra: dict[str, Any]) -> None:
    async with inbound_hub(db_url) as hub:
        status, body = await call(hub, path, {"sessionId": "61f3810a02e14c0877fc1a32", **extra})
    assert status == 404, body
    assert body["messageKey"] == "SESSION_NOT_FOUND"


# -- inactivity ---------------------------------------------------------------------------


INACTIVITY_MS = 400


async def test_inactive_sessions_are_closed_by_the_sweep(db_url: str) -> None:
    # The hub's clock moves only when the test says so: how long a request
    # takes on a loaded machine cannot pass for a customer's silence.
    clock = FakeClock()
    async with inbound_hub(
        db_url, clock=clock, session_inactivity_ms=INACTIVITY_MS, session_sweep_interval=0.05
    ) as hub:
        busy = await _open(hub)
        quiet_resolved = await _open_other(hub, "c9", "+447700900999")
        await _act(hub, "resolve", quiet_resolved)

        async def state_of(session_id: str) -> str:
            return (await hub.store.sessions.get_session(DEFAULT_TENANT, session_id)).state.value

        async def keep_talking() -> tuple[str, list[str]]:
            data = await receive(hub, wrapper(text_message(f"k{next(_ids)}")))
            return await state_of(busy), data["sessionIds"]

        # A customer who writes every 150 ms keeps the session open for three
        # times the timeout, with sweeps running in between, while the
        # resolved session that went quiet is closed.
        for _ in range(8):
            clock.advance(150)
            assert await keep_talking() == ("ACTIVE", [busy])
            await asyncio.sleep(0.06)

        async def quiet_closed() -> bool:
            return await state_of(quiet_resolved) == "CLOSED"

        await _until(quiet_closed)
        assert await state_of(busy) == "ACTIVE"
        clock.advance(INACTIVITY_MS + 1)
        # ...and once quiet, it is closed like the resolved one.
        states: dict[str, str] = {}

        async def poll() -> None:
            for sid in (busy, quiet_resolved):
                states[sid] = (
                    await hub.store.sessions.get_session(DEFAULT_TENANT, sid)
                ).state.value

        async def closed() -> bool:
            await poll()
            return set(states.values()) == {"CLOSED"}

        await _until(closed)
        sessions = [
            await hub.store.sessions.get_session(DEFAULT_TENANT, s) for s in (busy, quiet_resolved)
        ]
        closes = [
            e for e in await logged(hub, EventType.SESSION) if e.event.message == "SESSION_CLOSED"
        ]
        changes = await logged(hub, EventType.CONVERSATION_CHANGE)
    assert {s.close_reason for s in sessions} == {"INACTIVITY_TIMEOUT"}
    assert {e.event.reason for e in closes} == {"INACTIVITY_TIMEOUT"}
    last = changes[-1].event.data
    assert last["state"] == "CLOSED" and last["closeReason"] == "INACTIVITY_TIMEOUT"


async def _open_other(hub: Any, contact_id: str, phone: str) -> str:
    data = await receive(
        hub,
        wrapper(
            text_message(f"o{next(_ids)}", sender=phone, contact_id=contact_id),
            contacts=[contact(contact_id, phone=phone)],
        ),
    )
    return str(data["sessionIds"][0])


async def _until(check: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling the store
            await asyncio.sleep(0.05)


# -- routing ------------------------------------------------------------------------------


async def test_routing_reports_old_and_new_and_later_messages_carry_the_route(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        session_id = await _open(hub)
        body = {**seed("session_routing.json"), "sessionId": session_id}
        status, routed = await call(hub, "/api/v1/session/routing", body)
        status2, rerouted = await call(
            hub,
            "/api/v1/session/routing",
            {"sessionId": session_id, "queue": "billing", "agent": "ana", "params": {"tier": 2}},
        )
        later = await receive(hub, wrapper(text_message("after-route", body="still there?")))
        session_events = await logged(hub, EventType.SESSION)
        content = await logged(hub, EventType.CONTENT)
        _, history = await call(hub, "/api/v1/session/messages", {"sessionId": session_id})
        _, by_queue = await call(hub, "/api/v1/sessions?queue=billing", method="GET")
        changes = await logged(hub, EventType.CONVERSATION_CHANGE)
    assert (status, status2) == (200, 200), (routed, rerouted)
    first = routed["data"]["session"]
    assert (first["queue"], first["agent"], first["team"]) == ("external_bot",) * 3
    assert first["skills"] == ["string"] and first["routingId"]
    second = rerouted["data"]["session"]
    assert (second["queue"], second["agent"], second.get("team", "")) == ("billing", "ana", "")
    assert second["params"] == {"tier": 2}

    routed_events = [e.event.data for e in session_events if e.event.message == "SESSION_ROUTED"]
    assert [
        (r["sessionRouted"]["sourceQueue"], r["sessionRouted"]["targetQueue"])
        for r in routed_events
    ] == [
        ("", "external_bot"),
        ("external_bot", "billing"),
    ]
    assert routed_events[1]["sessionRouted"]["routingId"] == second["routingId"]
    assert routed_events[1]["sessionRouted"]["params"] == {"tier": 2}
    assigned = [
        e.event.data["sessionAssigned"]
        for e in session_events
        if e.event.message == "SESSION_ASSIGNED"
    ]
    assert assigned == [
        {
            "oldAgent": "",
            "newAgent": "external_bot",
            "oldDept": "",
            "newDept": "external_bot",
            "oldBot": "",
            "newBot": "",
        },
        {
            "oldAgent": "external_bot",
            "newAgent": "ana",
            "oldDept": "external_bot",
            "newDept": "",
            "oldBot": "",
            "newBot": "",
        },
    ]
    # The next customer message goes where the session now points.
    assert later["sessionIds"] == [session_id]
    route = content[-1].event.data["route"]
    assert (route["queue"], route["agent"], route["routingId"]) == (
        "billing",
        "ana",
        second["routingId"],
    )
    assert [(r.get("queue"), r.get("agent")) for r in history["results"]] == [
        (None, None),
        ("billing", "ana"),
    ]
    assert [s["id"] for s in by_queue["results"]] == [session_id]
    # The agents show in the conversation: the first left, the second joined.
    participants = changes[-1].event.data["participants"]
    assert {(p["id"], p["role"], p["state"]) for p in participants} == {
        ("c1", "CONSUMER", "JOINED"),
        ("external_bot", "AGENT", "LEFT"),
        ("ana", "AGENT", "JOINED"),
    }


async def test_routing_needs_a_queue(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        session_id = await _open(hub)
        status, body = await call(hub, "/api/v1/session/routing", {"sessionId": session_id})
    assert status == 400
    assert [e["field"] for e in body["errors"]] == ["queue"]


# -- history ------------------------------------------------------------------------------


class _Ticking:
    """Wall time that never repeats, so every write has its own timestamp."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> int:
        self.last = max(now_ms(), self.last + 1)
        return self.last


async def test_session_messages_list_both_directions_oldest_first_across_pages(
    db_url: str,
) -> None:
    async with inbound_hub(db_url, clock=_Ticking()) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        expected: list[tuple[str, str]] = []
        session_id = ""
        for i in range(4):
            data = await receive(hub, wrapper(text_message(f"in-{i}", body=f"customer {i}")))
            session_id = data["sessionIds"][0]
            expected.append(("INBOUND", f"customer {i}"))
            if i < 3:
                await stub.SendMessage(
                    m.SendMessageRequest(
                        channel_id="sandbox",
                        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
                        to=o.OutboundContact(phone=PHONE),
                        text=o.OutboundText(body=f"agent {i}"),
                    )
                )
                expected.append(("OUTBOUND", f"agent {i}"))
        pages: list[list[dict[str, Any]]] = []
        token = ""
        while True:
            request = {"sessionId": session_id, "pageSize": 2, "pageToken": token}
            status, body = await call(hub, "/api/v1/session/messages", request)
            assert status == 200, body
            pages.append(body["results"])
            token = body["meta"].get("nextPageToken", "")
            if not token:
                break
    assert len(pages) == 4 and [len(p) for p in pages] == [2, 2, 2, 1]
    got = [
        (r["message"]["direction"], r["message"]["body"]["plain"]["markdownText"])
        for page in pages
        for r in page
    ]
    assert got == expected
    stamps = [r["createTime"] for page in pages for r in page]
    assert stamps == sorted(stamps)
    outbound = [r for page in pages for r in page if r["message"]["direction"] == "OUTBOUND"]
    assert all(r["status"] for r in outbound)
    assert {r["message"]["header"]["channelSessionId"] for page in pages for r in page} == {
        session_id
    }


async def test_list_sessions_filters_by_contact_and_state(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        first = await _open(hub)
        await _act(hub, "close", first)
        second = await _open(hub)
        _, active = await call(hub, "/api/v1/sessions?contactId=c1&state=ACTIVE", method="GET")
        _, closed = await call(hub, "/api/v1/sessions?state=CLOSED", method="GET")
        _, other = await call(hub, "/api/v1/sessions?contactId=nobody", method="GET")
    assert [s["id"] for s in active["results"]] == [second]
    assert [s["id"] for s in closed["results"]] == [first]
    assert closed["results"][0]["closeReason"] == "CLOSED_BY_API"
    assert other["results"] == []


# -- conversation state -------------------------------------------------------------------


async def test_conversation_change_carries_the_full_state(db_url: str) -> None:
    async with inbound_hub(db_url) as hub, live_changes(hub) as live:
        session_id = await _open(hub)
        session = await hub.store.sessions.get_session(DEFAULT_TENANT, session_id)
        conversation_id = session.conversation_id
        await call(
            hub,
            "/api/v1/session/routing",
            {"sessionId": session_id, "queue": "sales", "agent": "ana"},
        )
        survey = {
            "header": {
                "sender": {"id": "survey-app", "type": "APP"},
                "conversationId": conversation_id,
                "entities": {"dialogType": "SURVEY"},
            },
            "body": {"thirdPartyActivity": {"type": "SURVEY", "markdownText": "Rate us"}},
        }
        status, pushed = await call(hub, "/api/v1/conversation/activities", survey)
        assert status == 200, pushed
        assert (await _act(hub, "close", session_id))[0] == 200
        await live.wait_for(
            lambda: any(
                c.event.message == "CONVERSATION_CLOSED"
                for c in live.of_type("ConversationChangeEvent")
            )
        )
        changes = await logged(hub, EventType.CONVERSATION_CHANGE)
        _, got = await call(hub, f"/api/v1/conversations/{conversation_id}", method="GET")
        closed = await hub.store.sessions.get_session(DEFAULT_TENANT, session_id)
        activities = await logged(hub, EventType.THIRD_PARTY_ACTIVITY)

    assert [c.event.message for c in changes] == [
        "CONVERSATION_STARTED",  # the first message
        "CONVERSATION_UPDATED",  # routed to ana
        "CONVERSATION_UPDATED",  # the survey dialog opened
        "CONVERSATION_CLOSED",
    ]
    state = changes[-1].event.data
    survey_dialog = [d for d in state["dialogs"] if d["type"] == "SURVEY"]
    assert state["conversationId"] == conversation_id
    assert state["state"] == "CLOSED"
    assert state["channelId"] == "sandbox"
    assert state["customerId"] == "c1"
    assert state["address"] == PHONE
    assert state["closeReason"] == "CLOSED_BY_API"
    assert state["participants"] == [
        {"id": "c1", "role": "CONSUMER", "state": "LEFT"},
        {"id": "ana", "role": "AGENT", "state": "LEFT"},
    ]
    assert [(d["id"], d["type"], d["state"]) for d in state["dialogs"]] == [
        (conversation_id, "MAIN", "CLOSED"),
        (survey_dialog[0]["id"], "SURVEY", "CLOSED"),
    ]
    assert survey_dialog[0]["id"] != conversation_id
    assert all(isinstance(d["createTime"], int) and d["createTime"] > 0 for d in state["dialogs"])
    [summary] = state["sessions"]
    assert summary == {
        "sessionId": session_id,
        "state": "CLOSED",
        "contactId": "c1",
        "queue": "sales",
        "agent": "ana",
        "team": "",
        "closeReason": "CLOSED_BY_API",
        "createTime": closed.created_at,
        "updateTime": closed.updated_at,
    }
    assert state["createTime"] <= state["updateTime"] == closed.updated_at
    # The activity went to the survey dialog.
    [activity] = activities
    assert activity.event.dialog_id == survey_dialog[0]["id"]
    # Subscribers get it in the conversation envelope, with the same state.
    [(kind, live_closed)] = [
        (k, c) for k, c in live.items if c.event.message == "CONVERSATION_CLOSED"
    ]
    assert kind == CONVERSATION_NOTIFICATION
    assert live_closed.conversation_id == conversation_id
    assert live_closed.event.data["state"] == "CLOSED"
    assert live_closed.event.data["closeReason"] == "CLOSED_BY_API"
    assert [p["id"] for p in live_closed.event.data["participants"]] == ["c1", "ana"]
    assert len(live_closed.event.data["dialogs"]) == 2
    # GetConversation returns the same state.
    conv = got["data"]["conversation"]
    assert conv["state"] == "CLOSED" and conv["closeReason"] == "CLOSED_BY_API"
    assert [p["id"] for p in conv["participants"]] == ["c1", "ana"]
    assert [d["type"] for d in conv["dialogs"]] == ["MAIN", "SURVEY"]
    assert [s["id"] for s in conv["sessions"]] == [session_id]


async def test_unknown_conversation_is_404(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        status, body = await call(hub, "/api/v1/conversations/nope", method="GET")
    assert status == 404 and body["messageKey"] == "CONVERSATION_NOT_FOUND"
