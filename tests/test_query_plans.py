"""No statement the hub runs while it sends reads a whole growing table, or sorts one.

Every statement executed while messages are accepted, dispatched, receipted
and reported is captured with its parameters, and SQLite is asked how it would
run each one against the same database. A full scan of a table that grows with
traffic makes every call slower as the hub ages; a claim that read all of a
channel's past messages once made accepting ten times slower after a few
hundred thousand sends. The plans are SQLite's (PostgreSQL plans from
statistics), and the same statements run on both.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from server.config import DEFAULT_CHANNELS, Channel
from server.storage import direct
from server.storage.message_schema import messages
from support.hub import rest_session, running_hub
from support.replicas import wait_until

# Tables whose rows accumulate with every message sent or event logged.
GROWING = ("messages", "status_history", "events", "attempts", "webhooks", "idempotency")
SENDS = 30


# A search on one of these alone reads every row a tenant or a channel ever had.
COARSE = ("tenant_id", "channel_id")


def _scans(conn: sqlite3.Connection, statement: str, parameters: Any) -> list[str]:
    params = parameters if isinstance(parameters, (tuple, list, dict)) else ()
    if isinstance(params, list):  # executemany: one row's values tell the plan
        params = params[0] if params else ()
    plan = conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
    found = []
    for row in plan:
        detail = str(row[-1])
        for table in GROWING:
            # "SCAN t" and "SCAN t USING INDEX i" read every row; a covering
            # index scan of a small side table, or "SEARCH t", do not.
            whole = detail == f"SCAN {table}" or detail.startswith(f"SCAN {table} USING ")
            coarse = any(
                re.fullmatch(rf"SEARCH {table} USING (COVERING )?INDEX \w+ \({col}=\?\)", detail)
                for col in COARSE
            )
            if whole or coarse:
                found.append(detail)
    # A sort for ORDER BY reads every row the search matched before LIMIT takes
    # a few: on a growing table that is every waiting row, on each call.
    reads_growing = any(
        re.match(rf"(SEARCH|SCAN) ({'|'.join(GROWING)})\b", str(row[-1])) for row in plan
    )
    if reads_growing:
        found += [
            str(r[-1]) for r in plan if re.match(r"USE TEMP B-TREE FOR .*ORDER BY", str(r[-1]))
        ]
    return found


# SQLite's choice of index for the claim changed with the number of channels
# it is asked about: both a hub with one channel and one with several are run.
@pytest.mark.parametrize("channels", [DEFAULT_CHANNELS[:1], DEFAULT_CHANNELS], ids=["one", "all"])
async def test_what_the_hub_runs_while_sending_never_scans_a_growing_table(
    tmp_path: Path, channels: tuple[Channel, ...]
) -> None:
    db = tmp_path / "plans.db"
    statements: dict[str, Any] = {}
    async with running_hub(f"sqlite+aiosqlite:///{db}", channels=channels) as hub:

        def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            statements.setdefault(statement, parameters)

        def capture_direct(statement: str, parameters: Any) -> None:
            statements.setdefault(statement, parameters)

        event.listen(hub.store.engine.sync_engine, "before_cursor_execute", capture)
        # The accept path's statements run on the driver itself, past SQLAlchemy.
        direct.watchers.append(capture_direct)
        try:
            base = f"http://127.0.0.1:{hub.http_port}"
            async with rest_session() as http:
                for n in range(SENDS):
                    body = {
                        "channelId": "sandbox",
                        "type": "text",
                        "to": {"phone": f"+4479111{n:05d}"},
                        "text": {"body": f"plan {n}"},
                    }
                    async with http.post(f"{base}/api/v1/message/send", json=body) as resp:
                        assert resp.status == 200, await resp.text()

            async def delivered() -> bool:
                async with hub.store.engine.connect() as conn:
                    query = select(func.count()).where(messages.c.status == "DELIVERED")
                    return int((await conn.execute(query)).scalar_one()) >= SENDS

            await wait_until(delivered, 30, interval=0.05)
        finally:
            event.remove(hub.store.engine.sync_engine, "before_cursor_execute", capture)
            direct.watchers.remove(capture_direct)

    assert any("FROM messages" in s and "dispatch_state" in s for s in statements), (
        "the dispatch claim was not among the captured statements"
    )
    assert any("FROM consents" in s and "consents.address IN" in s for s in statements), (
        "the consent read of the accept path was not among the captured statements"
    )
    conn = sqlite3.connect(db)
    try:
        scanning = {
            s: found
            for s, p in statements.items()
            if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH"))
            and (found := _scans(conn, s, p))
        }
    finally:
        conn.close()
    assert scanning == {}, "\n\n".join(f"{found}\n{s}" for s, found in scanning.items())
