"""A message's timeline: every step from acceptance to its last webhook, in order."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from server.domain.fallback import FallbackLeg, LegState
from server.domain.models import AttemptEntry, OutboundMessage
from server.domain.status import TERMINAL, DeliveryStatus
from server.domain.webhook_delivery import WebhookAttemptEntry


class StepKind(StrEnum):
    ACCEPTED = "ACCEPTED"
    SCHEDULED = "SCHEDULED"
    ATTEMPT = "ATTEMPT"
    FALLBACK = "FALLBACK"
    STATUS = "STATUS"
    RECEIPT = "RECEIPT"
    WEBHOOK_ATTEMPT = "WEBHOOK_ATTEMPT"
    FINAL = "FINAL"


# Statuses only a provider's receipt sets; the others the hub decides itself.
RECEIPT_STATUSES = frozenset(
    {
        DeliveryStatus.DELIVERED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.READ,
        DeliveryStatus.CLICKED,
    }
)

# Steps written in one commit share a timestamp; this puts them in causal order.
_RANK = {
    StepKind.ACCEPTED: 0,
    StepKind.SCHEDULED: 1,
    StepKind.FALLBACK: 2,
    StepKind.ATTEMPT: 2,
    StepKind.STATUS: 3,
    StepKind.RECEIPT: 3,
    StepKind.WEBHOOK_ATTEMPT: 4,
    StepKind.FINAL: 5,
}


@dataclass(frozen=True, slots=True)
class TimelineStep:
    kind: StepKind
    timestamp: int
    status: DeliveryStatus | None = None
    reason: str = ""
    request_id: str = ""
    trace_id: str = ""
    send_time: int = 0
    attempt: AttemptEntry | None = None
    from_channel_id: str = ""
    to_channel_id: str = ""
    webhook: WebhookAttemptEntry | None = None


def build(m: OutboundMessage, webhooks: Sequence[WebhookAttemptEntry]) -> list[TimelineStep]:
    steps: list[TimelineStep] = []
    first, later = (m.history[0], m.history[1:]) if m.history else (None, ())
    if first is not None:
        steps.append(
            TimelineStep(
                StepKind.ACCEPTED,
                first.timestamp,
                first.status,
                # Set when the hub refused the message at acceptance (e.g. OPTED_OUT).
                first.reason,
                request_id=m.request_id,
                trace_id=m.trace_id,
            )
        )
    if first is not None and first.status is DeliveryStatus.SCHEDULED:
        # due_at moves on with each retry, so it is the send time only until the first try.
        send_time = m.due_at if not m.attempt_log else 0
        steps.append(TimelineStep(StepKind.SCHEDULED, first.timestamp, send_time=send_time))
    # A chain's legs say when and why each fired; without one, a change of
    # channel between attempts is an adapter's own fallback.
    channel = m.fallback[0].channel_id if m.fallback else m.channel_id
    for a in m.attempt_log:
        if a.channel_id != channel:
            if not m.fallback:
                steps.append(
                    TimelineStep(
                        StepKind.FALLBACK,
                        a.timestamp,
                        from_channel_id=channel,
                        to_channel_id=a.channel_id,
                    )
                )
            channel = a.channel_id
        steps.append(TimelineStep(StepKind.ATTEMPT, a.timestamp, reason=a.reason, attempt=a))
    steps.extend(_fired_legs(m.fallback))
    for h in later:
        kind = StepKind.RECEIPT if h.status in RECEIPT_STATUSES else StepKind.STATUS
        steps.append(TimelineStep(kind, h.timestamp, h.status, h.reason))
    steps.extend(
        TimelineStep(StepKind.WEBHOOK_ATTEMPT, w.timestamp, reason=w.error, webhook=w)
        for w in webhooks
    )
    if m.status in TERMINAL:
        reached = [h for h in m.history if h.status == m.status]
        at = reached[-1].timestamp if reached else m.created_at
        steps.append(
            TimelineStep(StepKind.FINAL, at, m.status, reached[-1].reason if reached else "")
        )
    ranked = sorted(enumerate(steps), key=lambda p: (p[1].timestamp, _RANK[p[1].kind], p[0]))
    return [step for _, step in ranked]


def _fired_legs(legs: Sequence[FallbackLeg]) -> list[TimelineStep]:
    steps = []
    for before, leg in itertools.pairwise(legs):
        if leg.fired_at is None:
            continue
        if before.state is LegState.REFUSED:
            why = f"leg {before.leg} refused"
        else:
            seconds = (before.deadline_ms or 0) // 1000
            why = f"no {before.success.value} on leg {before.leg} within {seconds} s"
        steps.append(
            TimelineStep(
                StepKind.FALLBACK,
                leg.fired_at,
                reason=f"leg {leg.leg} fired: {why}",
                from_channel_id=before.channel_id,
                to_channel_id=leg.channel_id,
            )
        )
    return steps
