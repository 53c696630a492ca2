"""What the metrics read at scrape time: outbox depth and dead letters, cheaply.

Both queries walk an index over the rows still waiting (PENDING messages,
DEAD webhooks), never the whole table, so their cost follows the backlog and
not the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.quota import QueueAhead
from server.storage.message_schema import messages
from server.storage.messages import CLAIMED, PENDING
from server.storage.webhook_schema import webhooks
from server.storage.webhooks import DEAD


@dataclass(frozen=True)
class OutboxStats:
    # (channel, priority) -> messages waiting, due or scheduled.
    depth: dict[tuple[str, int], int] = field(default_factory=dict)
    # channel -> the earliest due_at (ms) of its messages already due.
    oldest_due: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0


_DEPTH = (
    select(messages.c.channel_id, messages.c.priority, func.count())
    .where(messages.c.dispatch_state == PENDING)
    .group_by(messages.c.channel_id, messages.c.priority)
)
_DEAD = select(func.count()).select_from(webhooks).where(webhooks.c.state == DEAD)


_OLDEST = (
    select(messages.c.channel_id, func.min(messages.c.due_at))
    .where(and_(messages.c.dispatch_state == PENDING, messages.c.due_at <= bindparam("now")))
    .group_by(messages.c.channel_id)
)


async def outbox(conn: AsyncConnection, now: int) -> OutboxStats:
    depth = {(c, int(p)): int(n) for c, p, n in (await conn.execute(_DEPTH)).all()}
    oldest = {c: int(due) for c, due in (await conn.execute(_OLDEST, {"now": now})).all()}
    dead = int((await conn.execute(_DEAD)).scalar() or 0)
    return OutboxStats(depth, oldest, dead)


# The dispatcher takes due work highest priority first, then oldest due time,
# so a new send waits for every due message of at least its priority.
_AHEAD = (
    select(messages.c.channel_id, func.count())
    .where(
        or_(
            and_(
                messages.c.dispatch_state == PENDING,
                messages.c.priority >= bindparam("priority"),
                messages.c.due_at <= bindparam("now"),
            ),
            messages.c.dispatch_state == CLAIMED,
        ),
        messages.c.channel_id.in_(bindparam("channels", expanding=True)),
    )
    .group_by(messages.c.channel_id)
)
_SCHEDULED = (
    select(messages.c.channel_id, func.count())
    .where(
        messages.c.dispatch_state == PENDING,
        messages.c.due_at > bindparam("now"),
        messages.c.channel_id.in_(bindparam("channels", expanding=True)),
    )
    .group_by(messages.c.channel_id)
)


async def queue_ahead(
    conn: AsyncConnection, now: int, channels: Sequence[str], priority: int
) -> QueueAhead:
    """Walks the dispatch index over waiting rows only, like outbox()."""
    if not channels:
        return QueueAhead()
    params = {"now": now, "priority": priority, "channels": list(channels)}
    ahead = {c: int(n) for c, n in (await conn.execute(_AHEAD, params)).all()}
    later = {c: int(n) for c, n in (await conn.execute(_SCHEDULED, params)).all()}
    return QueueAhead(ahead, later)
