"""While the store cannot take a write, nothing a provider reported is dropped.

The store is made unavailable for real: a second SQLite connection holds the
write lock and the hub's busy timeout is short, so the hub's writes fail with
"database is locked" until the lock is released.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from adapters.sandbox import SandboxAdapter
from server.domain.content import MessageContent
from server.domain.models import Delivery, Receipt
from server.domain.provider import Accepted, CallbackRequest, CallbackResult, ReceiptSink
from server.domain.status import DeliveryStatus
from support.clock import eventually
from support.hub import AUTH_HEADERS, running_hub

SEND = "/api/v2/message/send"
BODY = {
    "channel": "sms",
    "from": "CNNECT",
    "to": [{"msisdn": ["+447911100001"]}],
    "content": {"type": "text", "text": "hello"},
}


class LockHolder:
    """Another process's connection that takes the database's write lock."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.held = False

    def take(self) -> None:
        self._conn.execute("BEGIN EXCLUSIVE")
        self.held = True

    def release(self) -> None:
        if self.held:
            self._conn.execute("ROLLBACK")
            self.held = False

    def close(self) -> None:
        self.release()
        self._conn.close()


async def test_the_sandbox_offers_a_receipt_again_until_it_is_recorded() -> None:
    recorded: list[Receipt] = []
    refusals = 3

    async def store_away_for_a_while(_channel_id: str, receipt: Receipt) -> None:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise ConnectionRefusedError("database unreachable")
        recorded.append(receipt)

    sandbox = SandboxAdapter("sbx", delivery_delay=0.0)
    await sandbox.start(store_away_for_a_while)
    try:
        accepted = await sandbox.send(
            Delivery("m1", "t", "sbx", "+447911100001", "text", "hi", MessageContent(), 1)
        )
        await eventually(lambda: bool(recorded), within=10)
    finally:
        await sandbox.close()
    assert refusals == 0
    assert [r.provider_message_id for r in recorded] == [accepted.provider_message_id]
    assert recorded[0].status == DeliveryStatus.DELIVERED


class LocksTheStoreWhileSending:
    """A provider that accepts each message while the database is locked for a second."""

    def __init__(self, holder: LockHolder) -> None:
        self._holder = holder
        self.sent = 0

    async def start(self, receipts: ReceiptSink) -> None:
        pass

    async def send(self, delivery: Delivery) -> Accepted:
        self.sent += 1
        self._holder.take()
        asyncio.get_running_loop().call_later(1.0, self._holder.release)
        return Accepted(f"prov-{uuid.uuid4().hex}")

    async def close(self) -> None:
        pass


async def _message(hub: Any, message_id: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(headers=AUTH_HEADERS) as http,
        http.get(f"http://127.0.0.1:{hub.http_port}/api/v1/messages/{message_id}") as resp,
    ):
        body: dict[str, Any] = await resp.json()
        return body["data"]["message"]


async def test_an_acceptance_that_cannot_be_recorded_is_retried_not_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.db"
    holder = LockHolder(path)
    provider = LocksTheStoreWhileSending(holder)
    try:
        async with running_hub(
            f"sqlite+aiosqlite:///{path}?timeout=0.2", adapters={"sandbox-sms": provider}
        ) as hub:
            async with (
                aiohttp.ClientSession(headers=AUTH_HEADERS) as http,
                http.post(f"http://127.0.0.1:{hub.http_port}{SEND}", json=BODY) as resp,
            ):
                assert resp.status == 202
                message_id = (await resp.json())["results"][0]["messageId"]
            # The lease is a minute: only a retry records the outcome this soon.
            async with asyncio.timeout(10):
                while (await _message(hub, message_id))["status"] != "SUBMITTED":  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert not holder.held
            assert provider.sent == 1
    finally:
        holder.close()


class ReportsByCallback:
    """A provider that reports each status by calling the hub back."""

    async def start(self, receipts: ReceiptSink) -> None:
        pass

    async def send(self, delivery: Delivery) -> Accepted:
        return Accepted(f"prov-{delivery.message_id}")

    async def close(self) -> None:
        pass

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult:
        return CallbackResult(
            receipts=(Receipt(request.query["id"], DeliveryStatus.DELIVERED),), body=b"ok"
        )


async def test_a_callback_that_cannot_be_recorded_is_503_so_the_provider_retries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hub.db"
    holder = LockHolder(path)
    try:
        async with running_hub(
            f"sqlite+aiosqlite:///{path}?timeout=0.2", adapters={"sandbox-sms": ReportsByCallback()}
        ) as hub:
            url = f"http://127.0.0.1:{hub.http_port}/callbacks/sandbox-sms?id=prov-x"
            async with aiohttp.ClientSession() as http:
                holder.take()
                async with http.post(url, data=b"") as resp:
                    assert resp.status == 503, await resp.text()
                    assert int(resp.headers["Retry-After"]) >= 1
                holder.release()
                async with http.post(url, data=b"") as resp:
                    assert resp.status == 200, await resp.text()
    finally:
        holder.close()


class NeverReports:
    """A provider that accepts every message and never says what became of it."""

    async def start(self, receipts: ReceiptSink) -> None:
        pass

    async def send(self, delivery: Delivery) -> Accepted:
        return Accepted(f"prov-{delivery.message_id}")

    async def close(self) -> None:
        pass


async def test_a_message_whose_receipt_never_comes_expires_with_the_reason(db_url: str) -> None:
    async with running_hub(
        db_url,
        adapters={"sandbox-sms": NeverReports()},
        receipt_timeout_ms=1000,
        receipt_sweep_interval=0.1,
    ) as hub:
        async with (
            aiohttp.ClientSession(headers=AUTH_HEADERS) as http,
            http.post(f"http://127.0.0.1:{hub.http_port}{SEND}", json=BODY) as resp,
        ):
            assert resp.status == 202
            message_id = (await resp.json())["results"][0]["messageId"]
        async with asyncio.timeout(10):
            while (message := await _message(hub, message_id))["status"] != "EXPIRED":  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    statuses = [h["status"] for h in message["history"]]
    assert statuses == ["ACCEPTED", "SUBMITTED", "EXPIRED"]
    assert "no receipt" in message["history"][-1]["reason"]
