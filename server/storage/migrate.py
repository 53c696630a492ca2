"""Apply Alembic migrations from code, on either engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.storage.db import begin_write

_HERE = Path(__file__).resolve().parent / "migrations"


def _config(connection: Any) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = connection
    return cfg


# Replicas starting together on one PostgreSQL migrate one at a time.
_MIGRATION_LOCK_KEY = 0x43494D4D


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.connect() as conn:
        # On SQLite, beginning with the write lock is what takes turns.
        trans = await begin_write(conn)
        try:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await conn.run_sync(lambda sync_conn: command.upgrade(_config(sync_conn), revision))
        except BaseException:
            await trans.rollback()
            raise
        await trans.commit()


async def current(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def autogenerate(connection: Any, message: str) -> None:
    command.revision(_config(connection), message=message, autogenerate=True)
