"""Deadline fallback: a send's ordered chain of channels, one leg at a time.

Leg 1 is the message's own channel. Each step of the chain names the next
channel, how long the leg before it has (from the moment its provider took
it) to reach the step's success status, and which status that is. The next
leg fires when that time passes without it, or at once when the leg before is
refused. Every leg is an attempt on one message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from server.domain.errors import FieldViolation, invalid
from server.domain.models import Channel
from server.domain.status import DeliveryStatus

MAX_STEPS = 4
# Shorter than the receipt timeout, which would otherwise end a leg first.
MAX_DEADLINE_S = 24 * 3600
SUCCESS_STATUSES = (DeliveryStatus.DELIVERED, DeliveryStatus.READ)
# The reason code of a receipt for a leg that arrived after the next leg fired:
# the customer may now get (and the sender pay for) the message twice.
LATE_AFTER_FALLBACK = "LATE_AFTER_FALLBACK"


class LegState(StrEnum):
    # Not fired yet; a cancel may still withdraw it (see storage.fallback).
    WAITING = "WAITING"
    # Fired: queued, at the provider, or waiting on its deadline.
    ACTIVE = "ACTIVE"
    SUCCEEDED = "SUCCEEDED"
    # Its deadline passed without success and the next leg fired.
    SUPERSEDED = "SUPERSEDED"
    # Its deadline passed with no leg left to fire.
    TIMED_OUT = "TIMED_OUT"
    REFUSED = "REFUSED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class FallbackStep:
    """One step as a send gives it."""

    channel_id: str
    deadline_s: int
    success: DeliveryStatus = DeliveryStatus.DELIVERED


@dataclass(frozen=True, slots=True)
class PlannedLeg:
    """A leg as it is stored at acceptance: its channel and what it must reach, by when."""

    channel_id: str
    # None for the last leg: nothing fires after it.
    deadline_ms: int | None
    success: DeliveryStatus


@dataclass(frozen=True, slots=True)
class FallbackLeg:
    """A leg as stored, for the message's state and timeline."""

    leg: int
    channel_id: str
    state: LegState
    deadline_ms: int | None
    success: DeliveryStatus
    fired_at: int | None = None
    left_at: int | None = None
    due_at: int | None = None
    settled_at: int | None = None
    provider_message_id: str = ""
    # When a receipt for it reached its success status after the next leg fired.
    late_at: int | None = None


def plan_chain(
    primary: Channel,
    steps: Sequence[FallbackStep],
    channels: Mapping[str, Channel],
    field: str = "fallback",
) -> tuple[PlannedLeg, ...]:
    """The legs of a send with a fallback chain; () when it has none."""
    if not steps:
        return ()
    problems: list[FieldViolation] = []
    if len(steps) > MAX_STEPS:
        problems.append(FieldViolation(field, f"at most {MAX_STEPS} steps"))
    seen = {primary.channel_id}
    for i, step in enumerate(steps):
        at = f"{field}[{i}]"
        channel = channels.get(step.channel_id)
        if not step.channel_id:
            problems.append(FieldViolation(f"{at}.channelId", "required"))
        elif channel is None:
            unknown = f"unknown channel {step.channel_id!r}"
            problems.append(FieldViolation(f"{at}.channelId", unknown))
        elif step.channel_id in seen:
            problems.append(
                FieldViolation(f"{at}.channelId", "each channel may appear once in a chain")
            )
        elif _is_email(channel) != _is_email(primary):
            problems.append(
                FieldViolation(
                    f"{at}.channelId", "must take the same kind of address as the message's channel"
                )
            )
        seen.add(step.channel_id)
        if not 1 <= step.deadline_s <= MAX_DEADLINE_S:
            problems.append(
                FieldViolation(f"{at}.deadlineSeconds", f"must be from 1 to {MAX_DEADLINE_S}")
            )
        if step.success not in SUCCESS_STATUSES:
            problems.append(FieldViolation(f"{at}.successStatus", "must be DELIVERED or READ"))
    if problems:
        raise invalid(problems)
    legs = [
        PlannedLeg(channel_id, step.deadline_s * 1000, step.success)
        for channel_id, step in zip(
            (primary.channel_id, *(s.channel_id for s in steps[:-1])), steps, strict=True
        )
    ]
    # The last leg has no deadline; it counts as delivered at DELIVERED.
    legs.append(PlannedLeg(steps[-1].channel_id, None, DeliveryStatus.DELIVERED))
    return tuple(legs)


def succeeded_leg(legs: Sequence[FallbackLeg]) -> FallbackLeg | None:
    """The leg that reached its success status first, late or not."""
    done = [leg for leg in legs if leg.state is LegState.SUCCEEDED or leg.late_at is not None]
    return min(done, key=lambda leg: (_success_time(leg), leg.leg), default=None)


def _success_time(leg: FallbackLeg) -> int:
    return (leg.late_at if leg.late_at is not None else leg.settled_at) or 0


def _is_email(channel: Channel) -> bool:
    return channel.contact_type.upper() == "EMAIL"
