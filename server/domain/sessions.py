"""The session state machine."""

from __future__ import annotations

from server.domain.errors import failed_precondition
from server.domain.models import SessionState

_ALLOWED = {
    SessionState.ACTIVE: {SessionState.RESOLVED, SessionState.CLOSED},
    # A customer writing to a resolved session brings it back to life.
    SessionState.RESOLVED: {SessionState.CLOSED, SessionState.ACTIVE},
    SessionState.CLOSED: set(),
}


def check_transition(current: SessionState, target: SessionState) -> None:
    if target not in _ALLOWED[current]:
        raise failed_precondition(
            f"SESSION_{current.value}",
            f"a {current.value.lower()} session cannot become {target.value.lower()}",
        )
