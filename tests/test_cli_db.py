"""`cimhub db upgrade` brings an empty database to the head revision, on both engines."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from server.storage import migrate
from server.storage.db import make_engine
from support.postgres import PostgresServer


def _head() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrate._HERE))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def _cimhub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=120
    )


async def _revision(db_url: str) -> str | None:
    engine = make_engine(db_url)
    try:
        return await migrate.current(engine)
    finally:
        await engine.dispose()


async def test_db_upgrade_brings_an_empty_database_to_head(db_url: str) -> None:
    assert await _revision(db_url) is None
    first = await asyncio.to_thread(_cimhub, "db", "upgrade", "--database-url", db_url)
    assert first.returncode == 0, first.stderr
    head = _head()
    assert await _revision(db_url) == head
    again = await asyncio.to_thread(_cimhub, "db", "upgrade", "--database-url", db_url)
    assert again.returncode == 0, again.stderr  # a second run is a no-op
    current = await asyncio.to_thread(_cimhub, "db", "current", "--database-url", db_url)
    print(f"\nhead={head} upgrade_output={first.stdout.strip()!r} current={current.stdout.strip()}")
    assert f"revision {head}" in first.stdout
    assert current.stdout.strip() == head


async def test_replicas_upgrading_together_take_turns(postgres_server: PostgresServer) -> None:
    name = await postgres_server.create_database_async()
    url = postgres_server.url(name)
    try:
        runs = await asyncio.gather(
            *(asyncio.to_thread(_cimhub, "db", "upgrade", "--database-url", url) for _ in range(3))
        )
        print(f"\nconcurrent_upgrades={len(runs)} exit_codes={[r.returncode for r in runs]}")
        assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr[-2000:] for r in runs]
        assert await _revision(url) == _head()
    finally:
        await postgres_server.drop_database_async(name)


async def test_db_upgrade_makes_the_sqlite_files_directory(tmp_path: Path) -> None:
    # A query in the URL (a busy timeout here) does not change which file it names.
    path = tmp_path / "not" / "yet" / "hub.db"
    url = f"sqlite+aiosqlite:///{path}?timeout=5"
    done = await asyncio.to_thread(_cimhub, "db", "upgrade", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix == ".db") == ["hub.db"]
    assert await _revision(url) == _head()
