"""The connection a writer's group commits run on.

A group checked a connection out of the pool and gave it back: on SQLite
that is about 60 µs of SQLAlchemy's pool and greenlet work (checkout, the
reset's rollback on return), as much as the rest of a lone send's begin and
commit together, for a database with one writer anyway. So a SQLite file's
writer holds its connection from group to group, and SQLite's own page cache
stays warm with it. PostgreSQL's writers run several groups at once and
check out per group, where the pool's idle ping guards against a restart.

A group that raises gives its connection back (rolled back, or dropped by
the pool if it broke) and the next group opens another: nothing a failed
group did lingers on the held one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# Loop turns a held group gives up once it is done, as many as giving a
# pooled connection back takes (SQLAlchemy closes it in a task of its own).
# A SQLite group never suspends, since the driver runs on the loop's thread,
# so calls that arrived meanwhile reach the writer only after it; the writer
# counts what came in during a commit to tell whether more callers are on
# their way (Writer._all_back). Without the turns none ever had, and at c=64
# each group closed as soon as sends paused for GATHER_QUIET_S: 2-3 writes a
# group and 430-670 req/s on an all-roles hub, against 7-8 writes and
# 810-1,045 req/s with three turns, as with the connection given back each
# time (750-1,010). One turn gave 430-500 req/s, two about 700.
ARRIVAL_TURNS = 3


class GroupConnections:
    def __init__(self, engine: AsyncEngine, *, hold: bool) -> None:
        self._engine = engine
        self._hold = hold
        self._held: AsyncConnection | None = None

    @asynccontextmanager
    async def one(self) -> AsyncIterator[AsyncConnection]:
        if not self._hold:
            async with self._engine.connect() as conn:
                yield conn
            return
        held, self._held = self._held, None
        if held is None or held.closed or held.invalidated:
            conn = await self._engine.connect()
        else:
            conn = held
        try:
            yield conn
        except BaseException:
            await conn.close()
            raise
        self._held = conn
        for _ in range(ARRIVAL_TURNS):
            await asyncio.sleep(0)

    async def close(self) -> None:
        conn, self._held = self._held, None
        if conn is not None:
            await conn.close()
