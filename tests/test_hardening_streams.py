"""A subscriber that drops its connection frees its stream place at once, quietly.

Every hub here allows one stream per tenant and heartbeats every 30 s, so only
noticing the disconnect itself, not the next write, can admit a second stream.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import grpc
import pytest

from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from server.app import Hub
from support.hub import AUTH_HEADERS, channel_to, rest_session, running_hub

STREAM_PATH = "/api/v1/notifications/stream"
# Far beyond the wait below: a freed place cannot be the heartbeat's doing.
HEARTBEAT_S = 30
FREED_WITHIN_S = 2.0


@contextmanager
def loop_problems(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Collects what the loop reports as unhandled (never-retrieved exceptions and the like)."""
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    previous = loop.get_exception_handler()

    def record(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        problems.append(str(context.get("message", "")) + f" {context.get('exception')!r}")

    loop.set_exception_handler(record)
    try:
        yield problems
    finally:
        # Tasks dropped without being awaited only complain when collected.
        gc.collect()
        loop.set_exception_handler(previous)


def quiet_logs(caplog: pytest.LogCaptureFixture, problems: list[str]) -> None:
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    unretrieved = [
        r.getMessage()
        for r in caplog.records
        if "never retrieved" in r.getMessage() or "destroyed but it is pending" in r.getMessage()
    ]
    print(f"\nerror records: {len(errors)}, loop problems: {len(problems)}")
    assert errors == []
    assert unretrieved == []
    assert problems == []


@asynccontextmanager
async def raw_stream(hub: Hub, websocket: bool) -> AsyncIterator[asyncio.StreamWriter]:
    """A stream opened by hand, so the test can drop its socket without a goodbye."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.http_port)
    headers = {"Host": f"127.0.0.1:{hub.http_port}", **AUTH_HEADERS}
    if websocket:
        headers |= {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
        }
    else:
        headers["Accept"] = "text/event-stream"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {STREAM_PATH} HTTP/1.1\r\n{head}\r\n".encode())
    status = await reader.readline()
    assert status.split()[1] == (b"101" if websocket else b"200"), status
    while await reader.readline() not in (b"\r\n", b""):
        pass
    # The first heartbeat proves the stream holds its place.
    assert await reader.read(1), "the stream sent nothing"
    try:
        yield writer
    finally:
        writer.transport.abort()


async def stream_admitted(hub: Hub) -> bool:
    url = f"http://127.0.0.1:{hub.http_port}{STREAM_PATH}"
    async with rest_session() as http, http.get(url) as resp:
        if resp.status == 429:
            return False
        assert resp.status == 200, await resp.text()
        await resp.content.readuntil(b"\n\n")
        return True


async def admitted_again(hub: Hub) -> float:
    """Seconds until a new stream is admitted; fails after FREED_WITHIN_S."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await stream_admitted(hub):
        if loop.time() - started > FREED_WITHIN_S:
            raise AssertionError(f"no stream admitted within {FREED_WITHIN_S} s")
        await asyncio.sleep(0.05)
    return loop.time() - started


async def healthy(hub: Hub) -> None:
    url = f"http://127.0.0.1:{hub.http_port}/healthz"
    async with rest_session() as http, http.get(url) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("kind", ["sse", "websocket"])
async def test_a_dropped_http_stream_frees_its_place_at_once(
    db_url: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with loop_problems(caplog) as problems:
        async with running_hub(
            db_url, max_streams_per_tenant=1, heartbeat_seconds=HEARTBEAT_S
        ) as hub:
            async with raw_stream(hub, websocket=kind == "websocket"):
                assert not await stream_admitted(hub), "the limit of one was not enforced"
            waited = await admitted_again(hub)
            print(f"\n{kind}: a new stream was admitted {waited:.2f} s after the drop")
            await healthy(hub)
    quiet_logs(caplog, problems)


async def test_a_cancelled_grpc_stream_frees_its_place_at_once(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with loop_problems(caplog) as problems:
        async with running_hub(
            db_url, max_streams_per_tenant=1, heartbeat_seconds=HEARTBEAT_S
        ) as hub:
            async with channel_to(hub) as channel:
                stub = ng.NotificationServiceStub(channel)
                call = stub.StreamNotifications(n.StreamNotificationsRequest())
                assert (await call.read()).WhichOneof("item") == "heartbeat"
                assert not await stream_admitted(hub), "the limit of one was not enforced"
                call.cancel()
                waited = await admitted_again(hub)
                print(f"\ngRPC: a new stream was admitted {waited:.2f} s after the cancel")
                again = stub.StreamNotifications(n.StreamNotificationsRequest())
                # The REST probe above has closed; its place must be free again too.
                for _ in range(40):
                    try:
                        assert (await again.read()).WhichOneof("item") == "heartbeat"
                        break
                    except grpc.aio.AioRpcError as err:
                        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        await asyncio.sleep(0.05)
                        again = stub.StreamNotifications(n.StreamNotificationsRequest())
                else:
                    raise AssertionError("the gRPC stream was never admitted again")
                again.cancel()
            await healthy(hub)
    quiet_logs(caplog, problems)
