"""What an acknowledged SQLite commit survives is a setting, not an accident."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from server.config import Settings
from server.storage.db import make_engine
from server.storage.store import SqlStore

# PRAGMA synchronous answers with a number.
LEVELS = {"NORMAL": 1, "FULL": 2, "EXTRA": 3}


async def _level(url: str, **kwargs: str) -> int:
    engine = make_engine(url, **kwargs)  # type: ignore[arg-type]
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("PRAGMA synchronous"))).scalar_one())
    finally:
        await engine.dispose()


async def test_normal_by_default_full_when_asked(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    assert await _level(url) == LEVELS["NORMAL"]
    assert await _level(url, sqlite_synchronous="FULL") == LEVELS["FULL"]
    assert await _level(url + "?synchronous=extra") == LEVELS["EXTRA"]
    with pytest.raises(ValueError, match="synchronous"):
        await _level(url, sqlite_synchronous="OFF")


async def test_the_setting_reaches_the_store_that_commits(tmp_path: Path) -> None:
    settings = Settings.from_env({"CIMHUB_SQLITE_SYNCHRONOUS": "full"})
    assert settings.sqlite_synchronous == "FULL"
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    store = await SqlStore.open(
        url, lambda _events: None, sqlite_synchronous=settings.sqlite_synchronous
    )
    try:
        async with store.engine.connect() as conn:
            level = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
        assert level == LEVELS["FULL"]
    finally:
        await store.close()


def test_off_is_refused_as_a_setting() -> None:
    # OFF would acknowledge writes a crash of the process can lose.
    with pytest.raises(ValueError, match="NORMAL, FULL or EXTRA"):
        Settings.from_env({"CIMHUB_SQLITE_SYNCHRONOUS": "off"})


@pytest.mark.parametrize("level", ["NORMAL", "FULL", "EXTRA"])
async def test_a_commit_that_fsyncs_leaves_the_event_loop_free(tmp_path: Path, level: str) -> None:
    """Under FULL and EXTRA each commit waits for the disk: it runs on
    aiosqlite's thread, so the loop serves calls meanwhile. Under NORMAL a
    commit is a few writes into the WAL, cheaper than a hop to that thread."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", sqlite_synchronous=level)
    threads: dict[str, set[int]] = {}

    @event.listens_for(engine.sync_engine, "connect")
    def _trace(dbapi_conn: Any, _record: Any) -> None:
        def seen(statement: str) -> None:
            threads.setdefault(statement.split()[0].upper(), set()).add(threading.get_ident())

        dbapi_conn.driver_connection._conn.set_trace_callback(seen)

    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
    loop_thread = threading.get_ident()
    assert threads["INSERT"] == {loop_thread}
    if level == "NORMAL":
        assert threads["COMMIT"] == {loop_thread}
    else:
        assert loop_thread not in threads["COMMIT"]
