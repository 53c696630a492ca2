"""Routing a session to a queue, agent and team, and the events that report it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import FieldViolation, invalid
from server.domain.models import Session


@dataclass(frozen=True, slots=True)
class RouteChange:
    """A SessionQueueAssignment: where the session's later messages go."""

    session_id: str
    queue: str
    agent: str = ""
    team: str = ""
    skills: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


def check_route(change: RouteChange) -> None:
    problems = []
    if not change.session_id:
        problems.append(FieldViolation("sessionId", "required"))
    if not change.queue:
        problems.append(FieldViolation("queue", "required: the queue the session goes to"))
    if any(not skill for skill in change.skills):
        problems.append(FieldViolation("skills", "must not contain empty skills"))
    if problems:
        raise invalid(problems)


def routed_data(before: Session, change: RouteChange, routing_id: str) -> dict[str, Any]:
    """SESSION_ROUTED's data, in the shape of the public InBoundEvent.sessionRouted."""
    return {
        "sessionId": before.id,
        "sessionRouted": {
            "params": dict(change.params),
            "routingId": routing_id,
            "sessionStart": False,
            "sourceQueue": before.queue,
            "targetQueue": change.queue,
        },
    }


def assignment_changed(before: Session, change: RouteChange) -> bool:
    return (before.agent, before.team) != (change.agent, change.team)


def assigned_data(before: Session, change: RouteChange) -> dict[str, Any]:
    """SESSION_ASSIGNED's data, in the shape of InBoundEvent.sessionAssigned.

    The hub routes to agents and teams; a team is what the public shape calls a
    department. Bots are addressed through queues, so the bot fields stay empty.
    """
    return {
        "sessionId": before.id,
        "sessionAssigned": {
            "newAgent": change.agent,
            "newBot": "",
            "newDept": change.team,
            "oldAgent": before.agent,
            "oldBot": "",
            "oldDept": before.team,
        },
    }
