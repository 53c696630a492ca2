"""What the metrics read at scrape time: outbox depth and dead letters, cheaply.

Both queries walk an index over the rows still waiting (PENDING messages,
DEAD webhooks), never the whole table, so their cost follows the backlog and
not the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage.messages import PENDING
from server.storage.schema import messages, webhooks
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
