"""What a session change reports, built by the domain with no database."""

from __future__ import annotations

from server.domain import conversations
from server.domain.events import EventType
from server.domain.models import Session, SessionState
from server.domain.sessions import (
    SESSION_STARTED,
    session_event,
    summary,
    transition_code,
    transition_data,
)


def _session(**changes: object) -> Session:
    base = {
        "id": "s1",
        "tenant_id": "t1",
        "contact_id": "c1",
        "channel_id": "sms",
        "state": SessionState.ACTIVE,
        "conversation_id": "conv1",
        "queue": "billing",
        "agent": "ann",
        "created_at": 1,
        "updated_at": 1,
        "address": "+447911100001",
    }
    base.update(changes)
    return Session(**base)  # type: ignore[arg-type]


def test_a_started_session_reports_who_where_and_its_routing() -> None:
    event = session_event(_session(), SESSION_STARTED, summary(_session()))
    assert event.type is EventType.SESSION and event.message == "SESSION_STARTED"
    assert event.conversation_id == "conv1" and event.channel_id == "sms"
    assert event.customer_id == "+447911100001"
    assert event.data == {
        "sessionId": "s1",
        "contactId": "c1",
        "channelId": "sms",
        "address": "+447911100001",
        "queue": "billing",
        "agent": "ann",
    }


def test_a_session_without_an_address_is_reported_by_its_contact() -> None:
    assert session_event(_session(address=""), SESSION_STARTED, {}).customer_id == "c1"


def test_a_state_change_reports_from_and_to_and_a_reason_only_when_given() -> None:
    closed = transition_data("s1", SessionState.ACTIVE, SessionState.CLOSED, "INACTIVITY_TIMEOUT")
    assert closed == {
        "sessionId": "s1",
        "from": "ACTIVE",
        "to": "CLOSED",
        "reason": "INACTIVITY_TIMEOUT",
    }
    back = transition_data("s1", SessionState.RESOLVED, SessionState.ACTIVE)
    assert back == {"sessionId": "s1", "from": "RESOLVED", "to": "ACTIVE"}
    assert transition_code(SessionState.ACTIVE) == "SESSION_REACTIVATED"
    event = session_event(_session(), transition_code(SessionState.CLOSED), closed, "why")
    assert event.message == "SESSION_CLOSED" and event.reason == "why"


def test_a_conversation_change_carries_the_whole_state() -> None:
    session = _session()
    conv = conversations.with_sessions(conversations.started(session, 5), [session], 5)
    event = conversations.change_event(conv, [session], conversations.UPDATED)
    assert event.type is EventType.CONVERSATION_CHANGE and event.message == conversations.UPDATED
    assert event.conversation_id == "conv1" and event.customer_id == conv.address
    assert event.data == conversations.snapshot(conv, [session])
    assert event.data["conversationId"] == "conv1"
