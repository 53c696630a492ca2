"""Dispatch claims: due messages leased to a dispatcher, and each send's start fenced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, select, tuple_, update

from server.domain.content import parse_content
from server.domain.models import Delivery
from server.domain.provider import AttemptRecord
from server.storage import attempts as attempt_log
from server.storage import direct
from server.storage.message_schema import messages
from server.storage.messages import CLAIMED, PENDING
from server.storage.tx import LATER_MESSAGES, Tx

# What the attempt log says of a send that started and never reported back.
NO_OUTCOME = "NO_OUTCOME"
RESENT_REASON = "started with no outcome before its lease ran out; resent, may be a duplicate"


# What a claim reads of each row: what it orders by, what it records of a
# lapsed claim and what a Delivery carries. The whole row is twice as many
# columns, and turning each into Python was most of a claim's cost.
_CLAIMED_COLUMNS = [
    messages.c[name]
    for name in (
        "id", "tenant_id", "channel_id", "destination", "type", "text", "content",
        "priority", "due_at", "expire_at", "dispatch_state", "attempts", "created_at",
        "traceparent", "attempt_started_at", "attempt_provider",
    )
]  # fmt: skip


def _claim_read(state: str, ready: Any, order: Sequence[Any], on_channels: bool) -> Any:
    query = select(*_CLAIMED_COLUMNS).where(messages.c.dispatch_state == state, ready)
    if on_channels:
        query = query.where(messages.c.channel_id.in_(bindparam("channels", expanding=True)))
    return query.order_by(*order).limit(bindparam("limit")).with_for_update(skip_locked=True)


# The dispatch statements run several times a second under load: built once,
# they skip SQLAlchemy's statement building and cache-key work on every call.
# Due work and lapsed claims are separate reads, each an equality on
# dispatch_state, so both engines walk ix_messages_dispatch over the waiting
# rows only. As one OR with a channel filter, SQLite chose the channel_id index
# instead and read every message the channel ever had, so each claim cost more
# as the table grew.
#
# Due work is read one priority at a time, highest first: within a priority
# the index is in due order, so "due by now" is a range that ends where the
# messages scheduled for later begin. Read across priorities at once, every
# waiting message was walked (and, before the index matched the claim's order,
# sorted) on each claim: with 300,000 sends scheduled for tomorrow, 26 ms a
# claim on SQLite with nothing due.
def _due_query(on_channels: bool) -> Any:
    ready = and_(
        messages.c.priority == bindparam("priority"), messages.c.due_at <= bindparam("now")
    )
    return _claim_read(PENDING, ready, [messages.c.due_at], on_channels)


def _lapsed_query(on_channels: bool) -> Any:
    ready = messages.c.lease_until < bindparam("now")
    order = [messages.c.priority.desc(), messages.c.due_at]
    return _claim_read(CLAIMED, ready, order, on_channels)


# The highest priority up to `at_most` that has waiting messages: one index seek.
_NEXT_PRIORITY = direct.Statement(
    select(messages.c.priority)
    .where(messages.c.dispatch_state == PENDING, messages.c.priority <= bindparam("at_most"))
    .order_by(messages.c.priority.desc())
    .limit(1)
)
# The priority column's range (a 32-bit integer on PostgreSQL).
_HIGHEST, _LOWEST = 2**31 - 1, -(2**31)

# Every poll of the dispatcher runs these: compiled once (see direct.py).
_DUE = {
    on: (direct.Statement(_due_query(on)), direct.Statement(_lapsed_query(on)))
    for on in (False, True)
}
_CLAIM = direct.Statement(
    update(messages)
    .where(messages.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        dispatch_state=CLAIMED,
        lease_until=bindparam("lease_until"),
        attempts=messages.c.attempts + 1,
        updated_at=bindparam("now"),
        attempt_started_at=None,
        attempt_provider=None,
    )
)
# A start counts only for the claim it belongs to: the attempt number fences
# off a claimer whose claim was taken over, and a start already recorded
# fences off a second holder of the same claim.
_START = (
    update(messages)
    .where(
        tuple_(messages.c.id, messages.c.attempts).in_(bindparam("claims", expanding=True)),
        messages.c.dispatch_state == CLAIMED,
        messages.c.attempt_started_at.is_(None),
    )
    .values(attempt_started_at=bindparam("now"), attempt_provider=bindparam("provider"))
    .returning(messages.c.id)
)
# Claims that never reached a provider go back at once, and do not count as attempts.
_RELEASE_UNSTARTED = (
    update(messages)
    .where(messages.c.dispatch_state == CLAIMED, messages.c.attempt_started_at.is_(None))
    .values(
        dispatch_state=PENDING,
        lease_until=None,
        attempts=messages.c.attempts - 1,
        updated_at=bindparam("now"),
    )
)


async def claim_due(
    tx: Tx, limit: int, lease_ms: int, channels: Sequence[str] | None = None
) -> list[Delivery]:
    """Claim due work, highest priority first, then oldest due time.

    FOR UPDATE SKIP LOCKED lets several PostgreSQL workers claim side by side
    without taking the same row; SQLite has one writer and ignores it.
    """
    await tx.flush(upto=LATER_MESSAGES)  # messages accepted earlier in this group
    params: dict[str, Any] = {"now": tx.now, "limit": limit}
    if channels is not None:
        params["channels"] = list(channels)
    due, lapsed = _DUE[channels is not None]
    rows: list[Any] = []
    at_most = _HIGHEST
    while len(rows) < limit and at_most >= _LOWEST:
        found = await _NEXT_PRIORITY.rows(tx.conn, {"at_most": at_most})
        if not found:
            break
        priority = found[0][0]
        wanted = {**params, "priority": priority, "limit": limit - len(rows)}
        rows += await due.rows(tx.conn, wanted)
        at_most = priority - 1
    rows += await lapsed.rows(tx.conn, params)
    if not rows:
        return []
    if len(rows) > limit:
        # Both lists are in claim order; the best `limit` of the two are taken.
        # (On PostgreSQL the rest stay locked only until this claim commits.)
        rows = sorted(rows, key=lambda r: (-r.priority, r.due_at))[:limit]
    # A lapsed claim whose send had started may have reached the provider:
    # it goes again (at least once), and its log says so.
    unanswered = [r for r in rows if r.dispatch_state == CLAIMED and r.attempt_started_at]
    if unanswered:
        await attempt_log.record_many(
            tx,
            [
                (
                    r.id,
                    [
                        AttemptRecord(
                            r.channel_id,
                            r.attempt_provider or "",
                            "FAILED",
                            error_code=NO_OUTCOME,
                            reason=RESENT_REASON,
                        )
                    ],
                )
                for r in unanswered
            ],
        )
    await _CLAIM.run(
        tx.conn, [{"ids": [r.id for r in rows], "lease_until": tx.now + lease_ms, "now": tx.now}]
    )
    return [
        Delivery(
            message_id=r.id,
            tenant_id=r.tenant_id,
            channel_id=r.channel_id,
            destination=r.destination,
            type=r.type,
            text=r.text,
            content=parse_content(r.content, message_type=r.type),
            attempt=r.attempts + 1,
            expire_at=r.expire_at,
            accepted_at=r.created_at,
            trace_context=r.traceparent or "",
        )
        for r in rows
    ]


async def start_many(tx: Tx, starts: Sequence[tuple[Delivery, str]]) -> list[bool]:
    """Record that these claims' requests are about to go to their providers.

    Returns, for each, whether its claim still holds; one whose claim was
    taken over must not be sent.
    """
    by_provider: dict[str, list[tuple[str, int]]] = {}
    for delivery, provider in starts:
        by_provider.setdefault(provider, []).append((delivery.message_id, delivery.attempt))
    started: set[str] = set()
    for provider, claims in by_provider.items():
        found = await tx.conn.execute(
            _START, {"claims": claims, "now": tx.now, "provider": provider}
        )
        started.update(found.scalars())
    return [delivery.message_id in started for delivery, _ in starts]


async def start_one(tx: Tx, start: tuple[Delivery, str]) -> bool:
    return (await start_many(tx, [start]))[0]


async def release_unstarted(tx: Tx) -> None:
    """Give back every claim that never reached a provider, whoever took it.

    A claimer that is still alive loses nothing but the claim: its start is
    fenced off (see _START), and the message is sent once, by whoever claims it next.
    """
    await tx.conn.execute(_RELEASE_UNSTARTED, {"now": tx.now})


async def release_many(tx: Tx, message_ids: Sequence[str]) -> None:
    await tx.conn.execute(
        update(messages)
        .where(
            messages.c.id.in_(message_ids),
            messages.c.dispatch_state == CLAIMED,
            # A claim another holder has started is not this caller's to give back.
            messages.c.attempt_started_at.is_(None),
        )
        .values(
            dispatch_state=PENDING,
            lease_until=None,
            attempts=messages.c.attempts - 1,
            updated_at=tx.now,
        )
    )
