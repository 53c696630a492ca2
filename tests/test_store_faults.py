"""A store that is out of reach is UNAVAILABLE/503 with a retry hint, never INTERNAL/500.

Each failure is made for real: a second SQLite connection holding the write
lock, a file size limit the database cannot write past, a TCP proxy that
drops PostgreSQL's connections or the answer to a COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select, text

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from server.api.errors import store_fault_status
from server.domain.models import OutboundDraft
from server.storage.db import make_engine
from server.storage.faults import OutcomeUnknown, is_unavailable
from server.storage.message_schema import messages
from server.storage.store import SqlStore
from support.hub import AUTH_HEADERS, channel_to, running_hub
from support.postgres import PostgresServer
from support.proxy import FlakyProxy

SEND = "/api/v2/message/send"
MESSAGING = "cim.v1.MessagingService"


def _body(text_: str = "hello") -> dict[str, Any]:
    return {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": ["+447911100001"]}],
        "content": {"type": "text", "text": text_},
    }


async def _post(port: int, body: dict[str, Any], **headers: str) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession(headers={**AUTH_HEADERS, **headers}) as http,
        http.post(f"http://127.0.0.1:{port}{SEND}", json=body) as resp,
    ):
        return resp.status, resp.headers, await resp.json(content_type=None)


def _details(err: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    """(ErrorInfo reason, RetryInfo delay in seconds) from the rich status."""
    reason, delay = "", None
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return reason, delay


async def _assert_unavailable_on_both_transports(hub: Any, *, reads: bool = True) -> None:
    status, headers, reply = await _post(hub.http_port, _body())
    assert status == 503, reply
    assert reply["statusKey"] == "UNAVAILABLE"
    assert reply["messageKey"] == "STORE_UNAVAILABLE"
    assert int(headers["Retry-After"]) >= 1
    if reads:
        async with (
            aiohttp.ClientSession(headers=AUTH_HEADERS) as http,
            http.get(f"http://127.0.0.1:{hub.http_port}/api/v1/messages") as resp,
        ):
            assert resp.status == 503, await resp.text()
            assert "Retry-After" in resp.headers
    async with channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendBatch(
                m.SendBatchRequest(
                    channel="sms",
                    from_address="CNNECT",
                    to=[m.BatchDestination(msisdn=["+447911100001"])],
                    content=m.BatchContent(type="text", text="hi"),
                )
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        reason, delay = _details(caught.value)
        assert reason == "STORE_UNAVAILABLE"
        assert delay is not None and delay > 0


# -- SQLite -----------------------------------------------------------------


async def test_sqlite_locked_past_its_timeout_is_503_with_retry_after(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    async with running_hub(f"sqlite+aiosqlite:///{path}?timeout=0.2") as hub:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            # In WAL mode readers carry on beside a writer; writes time out.
            await _assert_unavailable_on_both_transports(hub, reads=False)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        status, _headers, reply = await _post(hub.http_port, _body())
        assert status == 202, reply


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Writes past limit bytes fail with EFBIG, as on a device that refuses them."""
    before = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, before)


def _draft(i: int) -> OutboundDraft:
    return OutboundDraft(
        channel_id="sandbox-sms",
        destination=f"+44791110{i:04d}",
        type="text",
        text="x" * 4000,
        content={"text": {"body": "x" * 4000}},
        conversation_id="c0ffee00-0000-0000-0000-000000000001",
    )


async def test_sqlite_disk_io_error_maps_to_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    store = await SqlStore.open(f"sqlite+aiosqlite:///{path}", lambda _events: None)
    try:
        await store.messages.accept("default", [_draft(0)], None, lambda _m: b"")
        wal_size = await asyncio.to_thread(os.path.getsize, f"{path}-wal")
        with pytest.raises(Exception) as caught, _file_size_limit(wal_size):
            await store.messages.accept(
                "default", [_draft(i) for i in range(50)], None, lambda _m: b""
            )
        assert "disk I/O error" in repr(caught.value) or "disk is full" in repr(caught.value)
        assert is_unavailable(caught.value)
        status = store_fault_status(caught.value)
        assert status is not None and status.code == grpc.StatusCode.UNAVAILABLE
        # The store carries on once the disk takes writes again.
        await store.messages.accept("default", [_draft(99)], None, lambda _m: b"")
    finally:
        await store.close()


def test_sqlite_disk_full_and_a_real_bug_are_told_apart(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.execute("PRAGMA max_page_count = 4")
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.execute("INSERT INTO t VALUES (randomblob(100000))")
    with pytest.raises(sqlite3.OperationalError) as bug:
        conn.execute("SELECT * FROM no_such_table")
    conn.close()
    assert is_unavailable(full.value)
    assert not is_unavailable(bug.value)
    assert store_fault_status(bug.value) is None
    assert store_fault_status(ValueError("a bug")) is None


# -- PostgreSQL -------------------------------------------------------------


@pytest.fixture
async def pg_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    name = await postgres_server.create_database_async()
    try:
        yield name
    finally:
        await postgres_server.drop_database_async(name)


@pytest.fixture
async def proxy(postgres_server: PostgresServer) -> AsyncIterator[FlakyProxy]:
    flaky = await FlakyProxy(postgres_server.host, postgres_server.port).start()
    try:
        yield flaky
    finally:
        await flaky.close()


@pytest.mark.postgresql
async def test_postgres_out_of_reach_is_503_with_retry_after(
    pg_database: str, proxy: FlakyProxy
) -> None:
    async with running_hub(proxy.url(pg_database)) as hub:
        assert await _health(hub) == (200, 200, "SERVING", "SERVING")
        proxy.cut()
        try:
            await _assert_unavailable_on_both_transports(hub)
            # Readiness turns off within a probe or two; liveness stays on.
            await _health_becomes(hub, (200, 503, "SERVING", "NOT_SERVING"), within=3)
        finally:
            proxy.mend()
        await _health_becomes(hub, (200, 200, "SERVING", "SERVING"), within=3)
        status, _headers, reply = await _post(hub.http_port, _body())
        assert status == 202, reply


async def _health_becomes(hub: Any, wanted: tuple[int, int, str, str], within: float) -> None:
    async with asyncio.timeout(within):
        while await _health(hub) != wanted:  # noqa: ASYNC110 - polled over the network
            await asyncio.sleep(0.05)


async def _health(hub: Any) -> tuple[int, int, str, str]:
    """(/healthz, /readyz, gRPC health of the process, of MessagingService)."""
    codes = []
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(f"http://127.0.0.1:{hub.http_port}{path}") as resp:
                codes.append(resp.status)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        process = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        api = await stub.Check(health_pb2.HealthCheckRequest(service=MESSAGING))
    name = health_pb2.HealthCheckResponse.ServingStatus.Name
    return codes[0], codes[1], name(process.status), name(api.status)


@pytest.mark.postgresql
async def test_lock_timeout_on_postgres_maps_to_unavailable(
    postgres_server: PostgresServer, pg_database: str
) -> None:
    engine = make_engine(postgres_server.url(pg_database))
    try:
        async with engine.connect() as holder, engine.connect() as waiter:
            await holder.execute(text("CREATE TABLE t (x int)"))
            await holder.commit()
            await holder.execute(text("LOCK TABLE t IN ACCESS EXCLUSIVE MODE"))
            await waiter.execute(text("SET lock_timeout = '100ms'"))
            with pytest.raises(Exception) as caught:
                await waiter.execute(text("SELECT * FROM t"))
            await waiter.rollback()
            await holder.rollback()
            with pytest.raises(Exception) as bug:
                await waiter.execute(text("SELECT * FROM no_such_table"))
    finally:
        await engine.dispose()
    assert is_unavailable(caught.value), repr(caught.value)
    status = store_fault_status(caught.value)
    assert status is not None and status.code == grpc.StatusCode.UNAVAILABLE
    assert not is_unavailable(bug.value)


@pytest.mark.postgresql
async def test_a_commit_cut_off_is_aborted_and_a_retry_with_the_key_is_safe(
    postgres_server: PostgresServer, pg_database: str, proxy: FlakyProxy
) -> None:
    marker = f"cut-{uuid.uuid4().hex}"
    key = f"key-{uuid.uuid4().hex}"
    async with running_hub(proxy.url(pg_database)) as hub:
        proxy.drop_reply_to_commit(marker.encode())
        status, _headers, reply = await _post(
            hub.http_port, _body(marker), **{"Idempotency-Key": key}
        )
        assert proxy.commits_dropped == 1
        assert status == 409, reply
        assert reply["statusKey"] == "ABORTED"
        assert reply["messageKey"] == "OUTCOME_UNKNOWN"
        assert "Idempotency-Key" in reply["message"]
        # The commit did land: the retry gets the original message back.
        status, _headers, again = await _post(
            hub.http_port, _body(marker), **{"Idempotency-Key": key}
        )
        assert status == 202, again
    engine = make_engine(postgres_server.url(pg_database))
    try:
        async with engine.connect() as conn:
            stored = (
                await conn.execute(
                    select(func.count()).select_from(messages).where(messages.c.text == marker)
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert stored == 1


def test_outcome_unknown_is_aborted_not_unavailable() -> None:
    status = store_fault_status(OutcomeUnknown("connection lost while committing"))
    assert status is not None and status.code == grpc.StatusCode.ABORTED
