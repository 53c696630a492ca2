"""Delivery status rules: which statuses are final and which moves are allowed."""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    SCHEDULED = "SCHEDULED"
    SUBMITTED = "SUBMITTED"
    DELIVERED = "DELIVERED"
    UNDELIVERED = "UNDELIVERED"
    READ = "READ"
    CLICKED = "CLICKED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    # Withdrawn by the sender before any request for it left the hub.
    CANCELLED = "CANCELLED"


# Receipts arrive out of order and more than once; a status may only replace
# one of lower rank, so DELIVERED followed by a late SUBMITTED stays DELIVERED.
_RANK = {
    DeliveryStatus.ACCEPTED: 0,
    DeliveryStatus.SCHEDULED: 0,
    DeliveryStatus.SUBMITTED: 1,
    DeliveryStatus.UNDELIVERED: 2,
    DeliveryStatus.FAILED: 2,
    DeliveryStatus.EXPIRED: 2,
    DeliveryStatus.CANCELLED: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.READ: 4,
    DeliveryStatus.CLICKED: 5,
}

TERMINAL = frozenset(
    {
        DeliveryStatus.DELIVERED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.READ,
        DeliveryStatus.CLICKED,
        DeliveryStatus.FAILED,
        DeliveryStatus.EXPIRED,
        DeliveryStatus.CANCELLED,
    }
)


def advances(current: DeliveryStatus, new: DeliveryStatus) -> bool:
    """True when moving from current to new is progress, not a repeat or a step back.

    Nothing follows CANCELLED: no provider ever saw the message, so no receipt
    or dispatch outcome can be about it.
    """
    if current is DeliveryStatus.CANCELLED:
        return False
    return _RANK[new] > _RANK[current]
