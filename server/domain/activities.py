"""Third-party activities: any CIM message another application pushes.

Input is the JSON form of the CimMessage (``MessageToDict``, full enum names).
Field paths are those of the request, where the message sits under ``activity``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.conversations import Conversation
from server.domain.errors import FieldViolation, invalid
from server.domain.events import EventType, NewEvent

ROOT = "activity"
MAX_ID_LENGTH = 128
MAX_CUSTOMER_LENGTH = 256
# The participant role each sender type appears with on the event.
_ROLES = {
    "AGENT": "AGENT",
    "BOT": "BOT",
    "CONNECTOR": "CONNECTOR",
    "APP": "THIRD_PARTY",
    "SYSTEM": "SYSTEM",
    "CUSTOMER": "CONSUMER",
}
_ALTERNATIVES = ("customer", "channelSessionId", "conversationId")


@dataclass(frozen=True, slots=True)
class ActivityInput:
    """A checked activity. At least one of the three anchors is set."""

    id: str
    sender_id: str
    sender_role: str
    customer_id: str
    channel_session_id: str
    conversation_id: str
    # A dialog type (e.g. SURVEY) from header.entities.dialogType: the activity
    # opens, or joins, a dialog of that type within the conversation.
    dialog_type: str
    summary: str
    message: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Activity:
    id: str
    tenant_id: str
    customer_id: str
    conversation_id: str
    channel_session_id: str
    published: bool
    message: Mapping[str, Any]
    created_at: int
    seq: int = 0


def check_activity(message: Mapping[str, Any]) -> ActivityInput:
    """Sender and body are mandatory, and one of customer, channel session or conversation."""
    problems: list[FieldViolation] = []
    header = message.get("header") or {}
    sender = header.get("sender") or {}
    sender_type = str(sender.get("type", "")).removeprefix("SENDER_TYPE_")
    if sender_type == "UNSPECIFIED":
        sender_type = ""
    sender_id = str(sender.get("id", ""))
    if not (sender_id or sender_type):
        problems.append(FieldViolation(f"{ROOT}.header.sender", "required: id or type"))
    body = message.get("body") or {}
    if not body:
        problems.append(FieldViolation(f"{ROOT}.body", "required: one content type"))
    customer = header.get("customer") or {}
    customer_id = str(customer.get("id", ""))
    session_id = str(header.get("channelSessionId", ""))
    conversation_id = str(header.get("conversationId", ""))
    if not (customer_id or session_id or conversation_id):
        problems.extend(
            FieldViolation(
                f"{ROOT}.header.{name}",
                "one of customer (with an id), channelSessionId or conversationId is required",
            )
            for name in _ALTERNATIVES
        )
    activity_id = str(message.get("id", ""))
    if len(activity_id) > MAX_ID_LENGTH:
        problems.append(FieldViolation(f"{ROOT}.id", f"at most {MAX_ID_LENGTH} characters"))
    if len(customer_id) > MAX_CUSTOMER_LENGTH:
        problems.append(
            FieldViolation(
                f"{ROOT}.header.customer.id", f"at most {MAX_CUSTOMER_LENGTH} characters"
            )
        )
    if problems:
        raise invalid(problems)
    entities = header.get("entities") or {}
    return ActivityInput(
        id=activity_id,
        sender_id=sender_id or sender_type.lower(),
        sender_role=_ROLES.get(sender_type, "THIRD_PARTY"),
        customer_id=customer_id,
        channel_session_id=session_id,
        conversation_id=conversation_id,
        dialog_type=str(entities.get("dialogType", "")).upper(),
        summary=_summary(body),
        message=message,
    )


def _summary(body: Mapping[str, Any]) -> str:
    """A line of text for the event: whatever the content offers to read."""
    for part in body.values():
        if isinstance(part, Mapping):
            for key in ("markdownText", "caption", "title", "url", "notes"):
                if part.get(key):
                    return str(part[key])
    return ""


def published_event(
    a: ActivityInput,
    activity_id: str,
    message: Mapping[str, Any],
    conv: Conversation,
    dialog_id: str,
) -> NewEvent:
    """The event an activity on an active conversation is published as."""
    return NewEvent(
        conversation_id=conv.id,
        type=EventType.THIRD_PARTY_ACTIVITY,
        originator_id=a.sender_id,
        originator_role=a.sender_role,
        message=a.summary,
        message_id=activity_id,
        channel_id=conv.channel_id,
        customer_id=conv.address,
        dialog_id=dialog_id,
        data={"activityId": activity_id, "cimMessage": dict(message)},
    )
