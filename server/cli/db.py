"""`cimhub db ...`: database maintenance without starting the server."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from server.config import Settings


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="database maintenance")
    actions = db.add_subparsers(dest="db_command", required=True)
    upgrade = actions.add_parser(
        "upgrade", help="apply the schema migrations (the server also does this at start)"
    )
    upgrade.add_argument("--database-url", help="SQLAlchemy URL (env CIMHUB_DATABASE_URL)")
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    upgrade.set_defaults(handler=_upgrade)
    current = actions.add_parser("current", help="print the database's schema revision")
    current.add_argument("--database-url", help="SQLAlchemy URL (env CIMHUB_DATABASE_URL)")
    current.set_defaults(handler=_current)


def _url(args: argparse.Namespace) -> str:
    return str(args.database_url or Settings.from_env(dict(os.environ)).database_url)


def _upgrade(args: argparse.Namespace) -> int:
    url = _url(args)
    revision = asyncio.run(_run_upgrade(url, args.revision))
    print(f"cimhub: database at revision {revision}", flush=True)
    return 0


def _current(args: argparse.Namespace) -> int:
    print(asyncio.run(_revision(_url(args))) or "empty", flush=True)
    return 0


async def _run_upgrade(url: str, revision: str) -> str | None:
    from server.storage import migrate
    from server.storage.db import make_engine

    _ensure_sqlite_dir(url)
    # A migration may rewrite a large table: no statement bound for it.
    engine = make_engine(url, command_timeout=None)
    try:
        await migrate.upgrade(engine, revision)
        return await migrate.current(engine)
    finally:
        await engine.dispose()


async def _revision(url: str) -> str | None:
    from server.storage import migrate
    from server.storage.db import make_engine

    engine = make_engine(url)
    try:
        return await migrate.current(engine)
    finally:
        await engine.dispose()


def _ensure_sqlite_dir(url: str) -> None:
    from server.storage.db import sqlite_file

    path = sqlite_file(url)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
