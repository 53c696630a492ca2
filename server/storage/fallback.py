"""Deadline fallback legs: stored at acceptance, armed when a leg leaves, fired once.

Every change of a leg's state is a conditional UPDATE on the state it
expects, so of a receipt, a deadline sweep on another replica and a cancel
racing for the same leg exactly one wins, on both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.fallback import LATE_AFTER_FALLBACK, FallbackLeg, LegState
from server.domain.models import OutboundDraft, OutboundMessage
from server.domain.status import DeliveryStatus, advances
from server.storage import direct
from server.storage.message_schema import fallback_legs, messages
from server.storage.tx import Tx

ACTIVE, WAITING = LegState.ACTIVE.value, LegState.WAITING.value


@dataclass(frozen=True, slots=True)
class Fired:
    """A leg that fired: the message goes out again, on channel_id."""

    message_id: str
    leg: int
    channel_id: str


async def plan(tx: Tx, created: Sequence[OutboundMessage], drafts: Sequence[OutboundDraft]) -> None:
    """Store the legs of every accepted message that has a chain; leg 1 is under way."""
    rows = [
        {
            "message_id": m.id,
            "leg": number,
            "tenant_id": m.tenant_id,
            "channel_id": planned.channel_id,
            "state": ACTIVE if number == 1 else WAITING,
            "deadline_ms": planned.deadline_ms,
            "success_status": planned.success.value,
            "fired_at": tx.now if number == 1 else None,
        }
        for m, d in zip(created, drafts, strict=True)
        for number, planned in enumerate(d.fallback, start=1)
    ]
    if rows:
        await tx.conn.execute(fallback_legs.insert(), rows)


# Built once: it runs for every group of provider acceptances.
_ARM = direct.Statement(
    update(fallback_legs)
    .where(
        fallback_legs.c.message_id == bindparam("m_id"),
        fallback_legs.c.channel_id == bindparam("channel"),
        fallback_legs.c.state == ACTIVE,
    )
    .values(
        left_at=bindparam("now"),
        provider_message_id=bindparam("provider_id"),
        # NULL on the last leg, which has no deadline.
        due_at=fallback_legs.c.deadline_ms + bindparam("now"),
    )
)


async def arm(tx: Tx, left: Sequence[tuple[str, str, str]]) -> None:
    """(message id, channel, provider id) of legs a provider took: their deadlines start now."""
    if left:
        await _ARM.run(
            tx.conn,
            [
                {"m_id": message_id, "channel": channel, "provider_id": provider_id, "now": tx.now}
                for message_id, channel, provider_id in left
            ],
        )


_LEGS_OF = direct.Statement(
    select(fallback_legs).where(fallback_legs.c.message_id.in_(bindparam("ids", expanding=True)))
)


async def note_receipts(tx: Tx, receipts: Sequence[tuple[str, str, DeliveryStatus]]) -> list[str]:
    """For each (message id, channel, status) of a receipt: settle its leg.

    Returns, per receipt, "" or the flagged reason of a receipt for a leg
    whose deadline had already fired the next one.
    """
    if not receipts:
        return []
    found = await _LEGS_OF.rows(
        tx.conn, {"ids": list({message_id for message_id, _, _ in receipts})}
    )
    legs = {(r.message_id, r.channel_id): r for r in found}
    flags: list[str] = []
    for message_id, channel_id, status in receipts:
        row = legs.get((message_id, channel_id))
        if row is None:
            flags.append("")
            continue
        reached = not advances(status, DeliveryStatus(row.success_status))
        if row.state == ACTIVE and reached and await _settle(tx, row):
            flags.append("")
            continue
        # Read again: a sweep may have fired the next leg since the read above.
        state = await _state(tx, message_id, row.leg)
        if state == LegState.SUPERSEDED.value:
            if reached:
                await tx.conn.execute(
                    update(fallback_legs)
                    .where(_key(message_id, row.leg), fallback_legs.c.late_at.is_(None))
                    .values(late_at=tx.now)
                )
            flags.append(
                f"{LATE_AFTER_FALLBACK}: {status.value} for leg {row.leg} on {channel_id} "
                "came after the next leg fired"
            )
        else:
            flags.append("")
    return flags


async def _settle(tx: Tx, row: Any) -> bool:
    won = await tx.conn.execute(
        update(fallback_legs)
        .where(_key(row.message_id, row.leg), fallback_legs.c.state == ACTIVE)
        .values(state=LegState.SUCCEEDED.value, settled_at=tx.now, due_at=None)
    )
    return bool(won.rowcount)


async def _state(tx: Tx, message_id: str, leg: int) -> str | None:
    return (
        await tx.conn.execute(select(fallback_legs.c.state).where(_key(message_id, leg)))
    ).scalar()


def _key(message_id: str, leg: int) -> Any:
    return and_(fallback_legs.c.message_id == message_id, fallback_legs.c.leg == leg)


async def fire_due(tx: Tx, limit: int = 100) -> list[Fired]:
    """Fire the next leg of every leg whose deadline has passed without success."""
    rows = (
        await tx.conn.execute(
            select(fallback_legs)
            .where(fallback_legs.c.state == ACTIVE, fallback_legs.c.due_at <= tx.now)
            .order_by(fallback_legs.c.due_at)
            .limit(limit)
            # Replicas sweeping at once split the work; the UPDATE below decides.
            .with_for_update(skip_locked=True)
        )
    ).all()
    fired: list[Fired] = []
    for row in rows:
        claimed = await tx.conn.execute(
            update(fallback_legs)
            .where(
                _key(row.message_id, row.leg),
                fallback_legs.c.state == ACTIVE,
                fallback_legs.c.due_at <= tx.now,
            )
            .values(state=LegState.SUPERSEDED.value, settled_at=tx.now, due_at=None)
        )
        if not claimed.rowcount:
            continue  # a receipt or another replica got there first
        seconds = (row.deadline_ms or 0) // 1000
        reason = f"no {row.success_status} on {row.channel_id} within {seconds} s"
        step = await _fire_next(tx, row.message_id, row.leg, reason)
        if step is None:
            # The rest of the chain was withdrawn: nothing fires after all.
            await tx.conn.execute(
                update(fallback_legs)
                .where(_key(row.message_id, row.leg))
                .values(state=LegState.TIMED_OUT.value)
            )
        else:
            fired.append(step)
    return fired


async def refused(tx: Tx, message_id: str, reason: str) -> Fired | None:
    """The active leg was refused: fire the next one at once, if there is one."""
    leg = (
        await tx.conn.execute(
            update(fallback_legs)
            .where(fallback_legs.c.message_id == message_id, fallback_legs.c.state == ACTIVE)
            .values(state=LegState.REFUSED.value, settled_at=tx.now, due_at=None)
            .returning(fallback_legs.c.leg, fallback_legs.c.channel_id)
        )
    ).first()
    if leg is None:
        return None
    return await _fire_next(tx, message_id, leg.leg, f"{leg.channel_id} refused it: {reason}")


async def _fire_next(tx: Tx, message_id: str, leg: int, reason: str) -> Fired | None:
    nxt = (
        await tx.conn.execute(
            update(fallback_legs)
            .where(_key(message_id, leg + 1), fallback_legs.c.state == WAITING)
            .values(state=ACTIVE, fired_at=tx.now)
            .returning(fallback_legs.c.channel_id)
        )
    ).first()
    if nxt is None:
        return None
    # The message goes back to the outbox on the next leg's channel; the
    # dispatcher sends it there as it would any due message.
    await tx.conn.execute(
        update(messages)
        .where(messages.c.id == message_id)
        .values(
            channel_id=nxt.channel_id,
            dispatch_state="PENDING",
            due_at=tx.now,
            lease_until=None,
            attempt_started_at=None,
            attempt_provider=None,
            last_error=f"fallback to leg {leg + 1}: {reason}",
            updated_at=tx.now,
        )
    )
    return Fired(message_id, leg + 1, nxt.channel_id)


async def withdraw(tx: Tx, message_id: str) -> int:
    """Cancel the legs of a message that have not fired; returns how many.

    A leg fires only from WAITING, by a conditional UPDATE like this one, so
    a cancel and a deadline racing for a leg never both win.
    """
    withdrawn = await tx.conn.execute(
        update(fallback_legs)
        .where(fallback_legs.c.message_id == message_id, fallback_legs.c.state == WAITING)
        .values(state=LegState.CANCELLED.value, settled_at=tx.now)
    )
    return int(withdrawn.rowcount or 0)


async def next_due(conn: AsyncConnection) -> int | None:
    """The earliest armed deadline, for the sweeper's next look."""
    return (
        await conn.execute(
            select(func.min(fallback_legs.c.due_at)).where(fallback_legs.c.state == ACTIVE)
        )
    ).scalar()


async def legs_of(conn: AsyncConnection, message_id: str) -> tuple[FallbackLeg, ...]:
    rows = (
        await conn.execute(
            select(fallback_legs)
            .where(fallback_legs.c.message_id == message_id)
            .order_by(fallback_legs.c.leg)
        )
    ).all()
    return tuple(
        FallbackLeg(
            leg=r.leg,
            channel_id=r.channel_id,
            state=LegState(r.state),
            deadline_ms=r.deadline_ms,
            success=DeliveryStatus(r.success_status),
            fired_at=r.fired_at,
            left_at=r.left_at,
            due_at=r.due_at,
            settled_at=r.settled_at,
            provider_message_id=r.provider_message_id or "",
            late_at=r.late_at,
        )
        for r in rows
    )
