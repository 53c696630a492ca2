"""Shared fixtures: throwaway PostgreSQL/Redis servers and a two-backend ``db_url``.

Session servers start lazily, the first time a test asks for them.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import unavailable
from support.postgres import PostgresServer, PostgresUnavailable
from support.redis import RedisServer, RedisUnavailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: test runs against the PostgreSQL server")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except RedisUnavailable as exc:
        unavailable(str(exc))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session Redis, flushed before the test."""
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy async URL of an empty database, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy async URL of an empty database on the session's PostgreSQL."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


class _LostTaskErrors(logging.Handler):
    """Collects asyncio's report of a task that failed with nobody looking."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "exception was never retrieved" in message:
            self.found.append(message + "\n" + self.format(record))


@pytest.fixture(autouse=True)
def no_lost_task_errors() -> Iterator[None]:
    """Fails the test during which a task's exception went unretrieved.

    asyncio reports it when the task is collected, so collect before looking.
    Run with PYTHONASYNCIODEBUG=1 to see where each such task was created.

    What survives the collection is frozen: a later test's collection then
    only walks the objects that test made, instead of everything every earlier
    test left behind (a full walk grew to over a second a test).
    """
    handler = _LostTaskErrors()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
        gc.collect()
        gc.freeze()
    finally:
        logger.removeHandler(handler)
    if handler.found:
        pytest.fail("a task failed and nobody retrieved its exception:\n" + handler.found[0])
