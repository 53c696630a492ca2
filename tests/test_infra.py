"""The test infrastructure itself: both database backends and Redis come up."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from support.postgres import PostgresServer
from support.redis import RedisServer


async def test_db_url_select_one(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("select 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_db_url_is_an_empty_private_database(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("create table probe (id integer primary key)"))
            await conn.execute(text("insert into probe (id) values (1)"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("select count(*) from probe"))).scalar_one() == 1
    finally:
        await engine.dispose()


@pytest.mark.postgresql
async def test_postgres_databases_are_isolated(postgres_server: PostgresServer) -> None:
    first = await postgres_server.create_database_async()
    second = await postgres_server.create_database_async()
    engines = [create_async_engine(postgres_server.url(name)) for name in (first, second)]
    try:
        assert postgres_server.url(first).startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        async with engines[0].begin() as conn:
            await conn.execute(text("create table probe (id integer primary key)"))
            await conn.execute(text("insert into probe (id) values (1)"))
        async with engines[1].begin() as conn:
            # The other database has neither the table nor, once made, the row.
            assert (await conn.execute(text("select to_regclass('probe')"))).scalar() is None
            await conn.execute(text("create table probe (id integer primary key)"))
            assert (await conn.execute(text("select count(*) from probe"))).scalar_one() == 0
        async with engines[0].connect() as conn:
            assert (await conn.execute(text("select count(*) from probe"))).scalar_one() == 1
    finally:
        for engine in engines:
            await engine.dispose()
        await postgres_server.drop_database_async(first)
        await postgres_server.drop_database_async(second)


async def test_redis_ping_set_get(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
        await client.set("cimhub:probe", "ok")
        assert await client.get("cimhub:probe") == b"ok"
    finally:
        await client.aclose()


async def test_redis_restart_keeps_port() -> None:
    import redis.asyncio as aioredis

    # A private server, so restarting it cannot disturb the session one.
    server = RedisServer().start()
    try:
        port, url = server.port, server.url
        client = aioredis.from_url(url)
        try:
            await client.set("k", "v")
        finally:
            await client.aclose()
        server.restart()
        assert server.port == port
        assert server.url == url
        client = aioredis.from_url(url)
        try:
            assert await client.ping() is True
            assert await client.get("k") is None  # no persistence across restarts
        finally:
            await client.aclose()
    finally:
        server.close()
