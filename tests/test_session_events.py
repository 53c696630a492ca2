"""What a session change, a customer message, a chat signal, an activity, a
customer event and a status callback report, built by the domain with no database."""

from __future__ import annotations

from server.domain import conversations
from server.domain.activities import ActivityInput, published_event
from server.domain.customer import CUSTOMER_EVENTS_CHANNEL, CustomerEvent, Link, customer_event
from server.domain.events import EventType
from server.domain.inbound import ChatSignal, ReceivedMessage, content_event, signal_event
from server.domain.models import Session, SessionState, conversation_for
from server.domain.sessions import (
    SESSION_STARTED,
    session_event,
    summary,
    transition_code,
    transition_data,
)
from server.domain.webhook_delivery import StatusCallback, receipt_wanted, status_callback


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


def _received(**changes: object) -> ReceivedMessage:
    base: dict[str, object] = {
        "channel_id": "whatsapp",
        "contact_id": "",
        "address": "+447911100001",
        "external_id": "wamid.1",
        "type": "text",
        "text": "STOP",
        "content_type": "text/plain",
        "body": {"text": "STOP"},
        "details": {"caption": ""},
    }
    base.update(changes)
    return ReceivedMessage(**base)  # type: ignore[arg-type]


def test_a_customer_message_is_reported_with_its_route_and_without_empty_facts() -> None:
    s = _session(channel_id="whatsapp")
    event = content_event(_received(), "m1", s, {"id": "m1"})
    assert event.type is EventType.CONTENT and event.conversation_id == "conv1"
    assert event.originator_role == "CONSUMER" and event.message == "STOP"
    assert event.message_id == "m1" and event.customer_id == "+447911100001"
    assert event.data == {
        "type": "text",
        "from": "+447911100001",
        "providerMessageId": "wamid.1",
        "sessionId": "s1",
        "route": {"queue": "billing", "agent": "ann", "team": "", "routingId": ""},
        "cimMessage": {"id": "m1"},
    }


def test_a_customer_message_reports_its_lane_and_what_its_keyword_did() -> None:
    consent = {"keyword": "STOP", "action": "OPT_OUT", "changed": True}
    event = content_event(_received(lane="+447400000000"), "m1", _session(), {}, consent)
    assert event.data["to"] == "+447400000000"
    assert event.data["consent"] == consent
    assert list(event.data)[-1] == "consent"


def test_a_status_callback_goes_only_where_and_when_it_was_asked_for() -> None:
    assert receipt_wanted("https://example.com/cb", ["DELIVERED"], "DELIVERED")
    assert not receipt_wanted("https://example.com/cb", ["DELIVERED"], "FAILED")
    assert not receipt_wanted("", ["DELIVERED"], "DELIVERED")
    assert not receipt_wanted("https://example.com/cb", None, "DELIVERED")
    message = StatusCallback("m1", "order-7", "sms", "+447911100001", "ctx")
    assert status_callback(message, "DELIVERED", "", 42) == {
        "type": "message.status",
        "timestamp": 42,
        "data": {
            "messageId": "m1",
            "correlationId": "order-7",
            "channel": "sms",
            "destination": "+447911100001",
            "status": "DELIVERED",
            "reason": "",
            "callbackData": "ctx",
            "timestamp": 42,
        },
    }


def test_a_chat_signal_is_reported_in_its_sessions_conversation() -> None:
    signal = ChatSignal(EventType.CHAT_STATE, "composing", "s1", "c1", "m9", "", "CONSUMER")
    event = signal_event(signal, _session())
    assert event.type is EventType.CHAT_STATE and event.conversation_id == "conv1"
    assert event.originator_id == "c1"  # the session's contact when none is named
    assert event.customer_id == "+447911100001" and event.channel_id == "sms"
    assert event.message == event.status == "composing" and event.message_id == "m9"
    assert event.data == {"chatState": "composing", "sessionId": "s1"}
    read = ChatSignal(EventType.ACCEPT_STATUS, "read", "s1", "", "m9", "agent-7", "AGENT")
    event = signal_event(read, _session())
    assert event.originator_id == "agent-7" and event.data == {
        "acceptStatus": "read",
        "sessionId": "s1",
    }


def test_an_activity_is_published_in_its_conversation_with_its_cim_message() -> None:
    conv = conversations.started(_session(), 5)
    activity = ActivityInput("", "bot-1", "BOT", "c1", "", "conv1", "SURVEY", "rated 5", {})
    event = published_event(activity, "a1", {"id": "a1", "body": {}}, conv, "d1")
    assert event.type is EventType.THIRD_PARTY_ACTIVITY and event.conversation_id == conv.id
    assert (event.originator_id, event.originator_role) == ("bot-1", "BOT")
    assert event.message == "rated 5" and event.message_id == "a1" and event.dialog_id == "d1"
    assert event.channel_id == "sms" and event.customer_id == "+447911100001"
    assert event.data == {"activityId": "a1", "cimMessage": {"id": "a1", "body": {}}}


def test_a_customer_event_is_sequenced_per_contact_with_its_links() -> None:
    links = (Link("crm", "phone", "+447911100001"),)
    event = customer_event("t1", CustomerEvent("order.shipped", "e1", links, "c1"))
    assert event.type is EventType.CUSTOMER and event.customer_id == "c1"
    assert event.conversation_id == conversation_for("t1", CUSTOMER_EVENTS_CHANNEL, "c1")
    assert (event.originator_id, event.originator_role) == ("t1", "TENANT")
    assert event.data == {
        "eventName": "order.shipped",
        "id": "e1",
        "links": [{"linkName": "crm", "linkType": "phone", "linkValue": "+447911100001"}],
    }
    # Without a contact, each event id is a sequence of its own.
    alone = customer_event("t1", CustomerEvent("order.shipped", "e2", ()))
    assert alone.conversation_id == conversation_for("t1", CUSTOMER_EVENTS_CHANNEL, "e2")
