"""Conversations: a customer's sessions on a channel, their participants and dialogs.

Every change is reported with the conversation's complete state (``snapshot``),
so a subscriber never has to merge partial updates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from server.domain.events import EventType, NewEvent
from server.domain.models import Session, SessionState

MAIN_DIALOG = "MAIN"
CONSUMER, AGENT = "CONSUMER", "AGENT"
JOINED, LEFT = "JOINED", "LEFT"
OPEN, CLOSED = "OPEN", "CLOSED"

# Change codes, carried as the event message.
STARTED = "CONVERSATION_STARTED"
REOPENED = "CONVERSATION_REOPENED"
UPDATED = "CONVERSATION_UPDATED"
ENDED = "CONVERSATION_CLOSED"


class ConversationState(StrEnum):
    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Participant:
    id: str
    role: str
    state: str = JOINED


@dataclass(frozen=True, slots=True)
class Dialog:
    id: str
    type: str
    state: str = OPEN
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    tenant_id: str
    channel_id: str
    customer_id: str
    address: str
    state: ConversationState
    participants: tuple[Participant, ...]
    dialogs: tuple[Dialog, ...]
    close_reason: str
    created_at: int
    updated_at: int


def started(session: Session, now: int) -> Conversation:
    """A new conversation around its first session: the customer and a main dialog."""
    return Conversation(
        id=session.conversation_id,
        tenant_id=session.tenant_id,
        channel_id=session.channel_id,
        customer_id=session.contact_id,
        address=session.address or session.contact_id,
        state=ConversationState.ACTIVE,
        participants=(Participant(session.contact_id, CONSUMER),),
        dialogs=(Dialog(session.conversation_id, MAIN_DIALOG, OPEN, now),),
        close_reason="",
        created_at=now,
        updated_at=now,
    )


def with_sessions(conv: Conversation, sessions: Sequence[Session], now: int) -> Conversation:
    """Bring state, participants and the main dialog in line with the sessions.

    Active while any session is open. Closing ends every dialog and sees every
    participant out, keeping them listed; the close reason is the last
    session's. Reopening rejoins the customer and the main dialog.
    """
    open_sessions = [s for s in sessions if s.state is not SessionState.CLOSED]
    participants = list(conv.participants)
    if open_sessions:
        customer = open_sessions[-1].contact_id
        agents = {s.agent for s in open_sessions if s.agent}
        participants = _set_state(participants, customer, CONSUMER, JOINED)
        for p in list(participants):
            if p.role == AGENT and p.state == JOINED and p.id not in agents:
                participants = _set_state(participants, p.id, AGENT, LEFT)
        for agent in sorted(agents):
            participants = _set_state(participants, agent, AGENT, JOINED)
        dialogs = tuple(
            replace(d, state=OPEN) if d.type == MAIN_DIALOG else d for d in conv.dialogs
        )
        state, reason = ConversationState.ACTIVE, ""
    else:
        participants = [replace(p, state=LEFT) for p in participants]
        dialogs = tuple(replace(d, state=CLOSED) for d in conv.dialogs)
        last = max(sessions, key=lambda s: (s.closed_at or 0, s.updated_at), default=None)
        state = ConversationState.CLOSED
        reason = last.close_reason if last is not None else conv.close_reason
    return replace(
        conv,
        state=state,
        participants=tuple(participants),
        dialogs=dialogs,
        close_reason=reason,
        updated_at=now,
    )


def _set_state(
    participants: list[Participant], pid: str, role: str, state: str
) -> list[Participant]:
    for i, p in enumerate(participants):
        if p.id == pid and p.role == role:
            participants[i] = replace(p, state=state)
            return participants
    return [*participants, Participant(pid, role, state)]


def open_dialog(conv: Conversation, dialog_type: str, dialog_id: str, now: int) -> Conversation:
    """Open a further dialog (e.g. a survey), unless one of that type is open."""
    if any(d.type == dialog_type and d.state == OPEN for d in conv.dialogs):
        return conv
    dialog = Dialog(dialog_id, dialog_type, OPEN, now)
    return replace(conv, dialogs=(*conv.dialogs, dialog), updated_at=now)


def dialog_of_type(conv: Conversation, dialog_type: str) -> Dialog | None:
    return next((d for d in conv.dialogs if d.type == dialog_type and d.state == OPEN), None)


def change_code(before: Conversation | None, after: Conversation) -> str:
    if before is None:
        return STARTED
    if after.state is ConversationState.CLOSED:
        return ENDED
    if before.state is ConversationState.CLOSED:
        return REOPENED
    return UPDATED


def snapshot(conv: Conversation, sessions: Iterable[Session]) -> dict[str, Any]:
    """The complete state, as every ExConversationChangeNotification carries it."""
    return {
        "conversationId": conv.id,
        "state": conv.state.value,
        "channelId": conv.channel_id,
        "customerId": conv.customer_id,
        "address": conv.address,
        "participants": [{"id": p.id, "role": p.role, "state": p.state} for p in conv.participants],
        "dialogs": [
            {"id": d.id, "type": d.type, "state": d.state, "createTime": d.created_at}
            for d in conv.dialogs
        ],
        "closeReason": conv.close_reason,
        "sessions": [session_summary(s) for s in sessions],
        "createTime": conv.created_at,
        "updateTime": conv.updated_at,
    }


def session_summary(s: Session) -> dict[str, Any]:
    return {
        "sessionId": s.id,
        "state": s.state.value,
        "contactId": s.contact_id,
        "queue": s.queue,
        "agent": s.agent,
        "team": s.team,
        "closeReason": s.close_reason,
        "createTime": s.created_at,
        "updateTime": s.updated_at,
    }


def change_event(conv: Conversation, sessions: Iterable[Session], code: str) -> NewEvent:
    """The ConversationChangeEvent reporting ``conv``'s new state, whole."""
    return NewEvent(
        conversation_id=conv.id,
        type=EventType.CONVERSATION_CHANGE,
        message=code,
        reason=conv.close_reason,
        channel_id=conv.channel_id,
        customer_id=conv.address,
        data=snapshot(conv, sessions),
    )
