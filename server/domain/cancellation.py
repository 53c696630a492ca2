"""Withdrawing messages before they leave: what a cancel did to each message."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from server.domain.status import DeliveryStatus

# The reason kept in a cancelled message's history when the caller gives none.
DEFAULT_REASON = "cancelled by the sender"

# Final statuses a message reaches without a provider having taken it.
_ENDED_UNSENT = frozenset({DeliveryStatus.CANCELLED, DeliveryStatus.FAILED, DeliveryStatus.EXPIRED})


class CancelOutcome(StrEnum):
    CANCELLED = "CANCELLED"
    ALREADY_SENT = "ALREADY_SENT"
    ALREADY_FINAL = "ALREADY_FINAL"
    # A leg is at its provider; the fallback legs still to come were withdrawn.
    FALLBACK_CANCELLED = "FALLBACK_CANCELLED"


@dataclass(frozen=True, slots=True)
class CancelResult:
    message_id: str
    outcome: CancelOutcome
    status: DeliveryStatus


def not_cancelled(message_id: str, status: DeliveryStatus) -> CancelResult:
    """Why a message the cancel could not take is out of reach.

    Anything not final that a cancel cannot take has a request at its
    provider or was accepted by one, so it counts as sent.
    """
    outcome = CancelOutcome.ALREADY_FINAL if status in _ENDED_UNSENT else CancelOutcome.ALREADY_SENT
    return CancelResult(message_id, outcome, status)
