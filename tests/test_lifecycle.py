"""The server process: reflection, health, and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from support.hub import AUTH_ENV, authed_channel

GRACE_SECONDS = 3.0


async def _start_server(db_url: str) -> tuple[asyncio.subprocess.Process, int, int]:
    env = {
        **os.environ,
        **AUTH_ENV,
        "CIMHUB_DATABASE_URL": db_url,
        "CIMHUB_SHUTDOWN_GRACE": str(GRACE_SECONDS),
        "CIMHUB_HEARTBEAT_SECONDS": "0.5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "server exited before it was ready"
            found = re.search(r"gRPC on [^:]+:(\d+), HTTP on [^:]+:(\d+)", line)
            if found:
                return proc, int(found.group(1)), int(found.group(2))


@pytest.fixture
async def server_process(db_url: str):
    proc, grpc_port, http_port = await _start_server(db_url)
    try:
        yield proc, grpc_port, http_port
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_reflection_lists_the_cim_services_plus_health_and_reflection(
    server_process,
) -> None:
    _, port, _ = server_process
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        response = await call.read()
        names = {s.name for s in response.list_services_response.service}
        call.cancel()
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="")
        )
    assert names == {
        "cim.v1.MessagingService",
        "cim.v1.NotificationService",
        "cim.v1.SessionService",
        "cim.v1.ConfigService",
        "cim.v1.CustomerService",
        "cim.v1.WebhookService",
        "cim.v1.ConsentService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_sigterm_ends_streams_with_unavailable_and_exits_zero(server_process) -> None:
    proc, port, _ = server_process
    async with authed_channel(f"127.0.0.1:{port}") as channel:
        stream = ng.NotificationServiceStub(channel).StreamNotifications(
            n.StreamNotificationsRequest()
        )
        first = await stream.read()  # a heartbeat proves the stream is live
        assert first.WhichOneof("item") in {"heartbeat", "notification"}
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(GRACE_SECONDS + 5):
                while True:
                    await stream.read()
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    async with asyncio.timeout(GRACE_SECONDS + 5):
        code = await proc.wait()
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < GRACE_SECONDS + 1, f"took {elapsed:.1f}s"


def test_default_database_is_sqlite_under_var() -> None:
    from server.config import Settings

    url = Settings.from_env({}).database_url
    assert url.startswith("sqlite+aiosqlite:///")
    assert Path(url.split(":///", 1)[1]).parts[0] == "var"
