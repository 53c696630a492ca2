"""The session state machine, and the events its changes are reported with."""

from __future__ import annotations

from typing import Any

from server.domain.errors import failed_precondition
from server.domain.events import EventType, NewEvent
from server.domain.models import Session, SessionState

_ALLOWED = {
    SessionState.ACTIVE: {SessionState.RESOLVED, SessionState.CLOSED},
    # A customer writing to a resolved session brings it back to life.
    SessionState.RESOLVED: {SessionState.CLOSED, SessionState.ACTIVE},
    SessionState.CLOSED: set(),
}

SESSION_STARTED = "SESSION_STARTED"
SESSION_REACTIVATED = "SESSION_REACTIVATED"
SESSION_ROUTED = "SESSION_ROUTED"
SESSION_ASSIGNED = "SESSION_ASSIGNED"

# Close reasons, as they appear on the session and in the conversation state.
CLOSED_BY_API = "CLOSED_BY_API"
INACTIVITY_TIMEOUT = "INACTIVITY_TIMEOUT"


def check_transition(current: SessionState, target: SessionState) -> None:
    if target not in _ALLOWED[current]:
        raise failed_precondition(
            f"SESSION_{current.value}",
            f"a {current.value.lower()} session cannot become {target.value.lower()}",
        )


def transition_code(target: SessionState) -> str:
    """SESSION_RESOLVED, SESSION_CLOSED, or SESSION_REACTIVATED for a return to ACTIVE."""
    if target is SessionState.ACTIVE:
        return SESSION_REACTIVATED
    return f"SESSION_{target.value}"


def is_open(state: SessionState) -> bool:
    """Open sessions receive the contact's messages; a closed one never again."""
    return state is not SessionState.CLOSED


def check_routable(session: Session) -> None:
    if session.state is SessionState.CLOSED:
        raise failed_precondition("SESSION_CLOSED", "a closed session cannot be routed")


def open_key(channel_id: str, contact_id: str) -> str:
    """Identifies "the open session of this contact on this channel"; unique while open."""
    return f"{channel_id}\x1f{contact_id}"


def summary(s: Session) -> dict[str, Any]:
    """SESSION_STARTED's data: who, where, and where it is routed."""
    return {
        "sessionId": s.id,
        "contactId": s.contact_id,
        "channelId": s.channel_id,
        "address": s.address,
        "queue": s.queue,
        "agent": s.agent,
    }


def transition_data(
    session_id: str, before: SessionState, after: SessionState, reason: str = ""
) -> dict[str, Any]:
    """The data of a state change: from, to and, when given, why."""
    data = {"sessionId": session_id, "from": before.value, "to": after.value}
    if reason:
        data["reason"] = reason
    return data


def session_event(s: Session, code: str, data: dict[str, Any], reason: str = "") -> NewEvent:
    """The SessionEvent reporting a change of ``s``: the code in ``message``, ``data`` beside it."""
    return NewEvent(
        conversation_id=s.conversation_id,
        type=EventType.SESSION,
        message=code,
        reason=reason,
        channel_id=s.channel_id,
        customer_id=s.address or s.contact_id,
        data=data,
    )
