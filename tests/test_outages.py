"""Two replicas under load while PostgreSQL or Redis goes away and comes back.

During the outage clients get 503 (never another 5xx), readiness says
NOT_SERVING and liveness SERVING; afterwards every acknowledged message
reaches a final status and an SSE subscriber has seen every event once.
The replica SIGKILL case is in test_scale_out.py (nothing left undone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from server.app import Hub
from server.domain.status import TERMINAL
from server.storage.db import make_engine
from server.storage.message_schema import messages
from support import unavailable
from support.hub import AUTH_HEADERS, running_hub
from support.postgres import PostgresServer, PostgresUnavailable
from support.redis import RedisServer
from support.replicas import (
    API_ID,
    API_KEY,
    Replica,
    logged_events,
    replicas,
    sandbox_channels,
    wait_until,
)

pytestmark = pytest.mark.postgresql
HEADERS = {"x-api-id": API_ID, "x-api-key": API_KEY}
SEND = "/api/v2/message/send"
HUNG_OR_DROPPED = 0


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own, so stopping it disturbs no other test."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pg_url(own_postgres: PostgresServer) -> AsyncIterator[str]:
    name = await own_postgres.create_database_async()
    try:
        yield own_postgres.url(name)
    finally:
        await own_postgres.drop_database_async(name)


def _base(replica: Replica) -> str:
    return f"http://127.0.0.1:{replica.http_port}"


class SseSubscriber:
    """An EventSource-like client: reconnects with Last-Event-ID whenever its stream ends."""

    def __init__(self, replica: Replica) -> None:
        self._url = f"{_base(replica)}/api/v1/notifications/stream"
        self.changes: list[tuple[str, int]] = []
        self.last_id = ""
        self.reconnects = 0
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SseSubscriber:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            while True:
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self._url, headers=headers) as resp:
                        if resp.status == 200:
                            await self._read(resp)
                self.reconnects += 1
                await asyncio.sleep(0.2)

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        event, event_id, data = "", "", ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "":
                self._handle(event, event_id, data)
                if event == "error":
                    return
                event, event_id, data = "", "", ""

    def _handle(self, event: str, event_id: str, data: str) -> None:
        if event == "heartbeat":
            self.ready.set()
        elif event == "notification":
            body = json.loads(data).get("body", {})
            self.changes.extend(
                (c["conversationId"], int(c["sequence"])) for c in body.get("changes", [])
            )
            self.last_id = event_id or self.last_id


@dataclass
class Load:
    """Single sends spread over both replicas, each with its own Idempotency-Key."""

    targets: list[Replica]
    acknowledged: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    # Answered ABORTED (the commit may have landed): retried with the same key.
    unsure: list[tuple[int, str]] = field(default_factory=list)
    sent = 0

    async def send(self, http: aiohttp.ClientSession, n: int, key: str) -> int:
        body = {
            "channel": "sms",
            "from": "CNNECT",
            "to": [{"msisdn": [f"+4474009{n:05d}"]}],
            "content": {"type": "text", "text": f"outage {n}"},
        }
        replica = self.targets[n % len(self.targets)]
        try:
            async with http.post(
                _base(replica) + SEND, json=body, headers={"Idempotency-Key": key}
            ) as resp:
                reply = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = HUNG_OR_DROPPED
        self.statuses[status] += 1
        if status == 202:
            self.acknowledged.update(r["messageId"] for r in reply["results"])
        elif status == 409:
            self.unsure.append((n, key))
        return status

    async def run(self, stop: asyncio.Event) -> None:
        # A request the hub neither answers nor fails within this is a hang.
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(headers=HEADERS, timeout=timeout) as http:
            while not stop.is_set():
                await self.send(http, self.sent, f"k-{uuid.uuid4().hex}")
                self.sent += 1
                await asyncio.sleep(0.01)

    async def settle_unsure(self) -> None:
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            for n, key in self.unsure:
                assert await self.send(http, n, key) == 202


async def _health(replica: Replica, http: aiohttp.ClientSession) -> tuple[int, int]:
    codes = []
    for path in ("/healthz", "/readyz"):
        try:
            async with http.get(_base(replica) + path) as resp:
                codes.append(resp.status)
        except aiohttp.ClientError:
            codes.append(0)
    return codes[0], codes[1]


async def _unfinished(db_url: str, ids: set[str]) -> int:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(messages.c.id, messages.c.status))
            final = {r.id for r in rows if r.status in {s.value for s in TERMINAL}}
    finally:
        await engine.dispose()
    return len(ids - final)


async def _outage_under_load(
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    stop_dependency: object,
    start_dependency: object,
    *,
    store_down: bool,
) -> None:
    channels = sandbox_channels(tmp_path / "channels.toml", tmp_path / "sent.log")
    env = {"CIMHUB_REDIS_URL": redis_url}
    async with replicas(pg_url, channels, 2, env) as pair, SseSubscriber(pair[1]) as sub:
        load = Load(pair)
        stop = asyncio.Event()
        sender = asyncio.create_task(load.run(stop))
        health: list[tuple[int, int]] = []
        async with aiohttp.ClientSession() as http:
            await wait_until(lambda: _at_least(load, 50), 20, interval=0.05)
            await asyncio.to_thread(stop_dependency)  # type: ignore[arg-type]
            loop = asyncio.get_running_loop()
            down_until = loop.time() + 3
            while loop.time() < down_until:
                health.extend([await _health(r, http) for r in pair])
                await asyncio.sleep(0.1)
            # Readiness must have turned off within the first couple of seconds.
            await asyncio.to_thread(start_dependency)  # type: ignore[arg-type]
            await wait_until(lambda: _all_ready(pair, http), 15, interval=0.1)
            sent_at_return = load.sent
            await wait_until(lambda: _at_least(load, sent_at_return + 50), 20, interval=0.05)
        stop.set()
        await sender
        await load.settle_unsure()

        async def settled() -> bool:
            if await _unfinished(pg_url, load.acknowledged):
                return False
            return len(sub.changes) >= len((await logged_events(pg_url))[0])

        await wait_until(settled, 60)
        log, _last = await logged_events(pg_url)
        changes = list(sub.changes)
    server_errors = {code: n for code, n in load.statuses.items() if code >= 500}
    print(
        f"\nsent={load.sent} acknowledged={len(load.acknowledged)} statuses={dict(load.statuses)}"
        f" aborted_then_retried={len(load.unsure)} sse_reconnects={sub.reconnects}"
        f" events={len(log)} seen={len(changes)}"
    )
    assert load.statuses[HUNG_OR_DROPPED] == 0  # every request answered, none hung
    assert set(server_errors) <= {503}, server_errors
    assert all(live == 200 for live, _ready in health), health  # liveness throughout
    if store_down:
        assert load.statuses[503] > 0  # the outage was real
        assert any(ready == 503 for _live, ready in health[:40]), health  # within 2 s
    else:
        assert all(ready == 200 for _live, ready in health), health
    assert len(changes) == len(set(changes))  # each event once
    assert changes == log  # none missed, in order


async def _at_least(load: Load, n: int) -> bool:
    return load.sent >= n


async def _all_ready(pair: list[Replica], http: aiohttp.ClientSession) -> bool:
    readiness = [(await _health(r, http))[1] for r in pair]
    return all(code == 200 for code in readiness)


async def test_postgres_stopped_and_started_again_under_load(
    own_postgres: PostgresServer, pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    await _outage_under_load(
        pg_url, redis_url, tmp_path, own_postgres.halt, own_postgres.resume, store_down=True
    )


async def test_redis_stopped_and_started_again_under_load(
    own_postgres: PostgresServer,
    pg_url: str,
    redis_server: RedisServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    await _outage_under_load(
        pg_url, redis_url, tmp_path, redis_server.stop, redis_server.start, store_down=False
    )


async def _send_one(hub: Hub) -> tuple[int, dict[str, str], dict[str, Any]]:
    body = {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": ["+447400900001"]}],
        "content": {"type": "text", "text": "frozen"},
    }
    async with (
        aiohttp.ClientSession(headers=AUTH_HEADERS) as http,
        http.post(f"http://127.0.0.1:{hub.http_port}{SEND}", json=body) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


async def test_a_send_while_the_database_is_frozen_is_503_not_a_hang(
    own_postgres: PostgresServer, pg_url: str
) -> None:
    """A database that keeps its connections open and answers nothing (a frozen
    host, a partition) must fail the request within its timeouts."""
    async with running_hub(pg_url, db_connect_timeout_s=1.0, db_command_timeout_s=1.0) as hub:
        status, _headers, reply = await _send_one(hub)
        assert status == 202, reply  # the pool holds open connections now
        own_postgres.freeze()
        try:
            # Far above the timeouts; without them the request waits forever.
            async with asyncio.timeout(20):
                status, headers, reply = await _send_one(hub)
        finally:
            own_postgres.thaw()
        assert status == 503, reply
        assert reply["statusKey"] == "UNAVAILABLE"
        assert int(headers["Retry-After"]) >= 1

        async def accepted_again() -> bool:
            return (await _send_one(hub))[0] == 202

        await wait_until(accepted_again, 20, interval=0.2)
