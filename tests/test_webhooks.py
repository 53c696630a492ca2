"""Webhook signing, the outbox and its sender, and the outbound HTTP chokepoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from server.domain.retry import RetryPolicy
from server.domain.webhook_signing import new_secret, sign, verify
from server.net.http import OutboundError
from server.storage import migrate
from server.storage import webhooks as hooks
from server.storage.db import make_engine
from server.storage.message_schema import messages
from server.storage.store import SqlStore
from server.storage.tx import Tx
from server.storage.webhook_schema import webhooks
from server.webhooks.sender import WebhookSender
from support.net import loopback_http, serving

TENANT = "t1"
FAST = RetryPolicy(base_ms=20, cap_ms=100)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def receiver(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """A real HTTP server on a free local port; yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    async with serving(app) as base:
        yield base


def _ignore(_: Any) -> None:
    return None


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(5):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


# -- signing ----------------------------------------------------------------

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'


def _headers(signature: str, ts: int = VECTOR_TS) -> dict[str, str]:
    return {"Webhook-Id": VECTOR_ID, "Webhook-Timestamp": str(ts), "Webhook-Signature": signature}


def test_sign_matches_an_independent_hmac() -> None:
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    signed = f"{VECTOR_ID}.{VECTOR_TS}.".encode() + VECTOR_BODY
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    got = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert got == expected
    # The published Standard Webhooks test vector for these inputs.
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_the_genuine_and_rejects_the_rest() -> None:
    good = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert verify(VECTOR_SECRET, _headers(good), VECTOR_BODY, now=VECTOR_TS)
    # One of several space-separated signatures is enough (secret rotation).
    assert verify(VECTOR_SECRET, _headers(f"v1,bm9wZQ== {good}"), VECTOR_BODY, now=VECTOR_TS)
    assert not verify(VECTOR_SECRET, _headers(good), b'{"test": 2432232315}', now=VECTOR_TS)
    assert not verify(new_secret(), _headers(good), VECTOR_BODY, now=VECTOR_TS)
    assert not verify(VECTOR_SECRET, _headers(good), VECTOR_BODY, now=VECTOR_TS + 600)
    assert not verify(VECTOR_SECRET, _headers(good), VECTOR_BODY, now=VECTOR_TS - 600)
    assert not verify(VECTOR_SECRET, _headers(good, ts=0), VECTOR_BODY, now=VECTOR_TS)
    assert not verify(VECTOR_SECRET, {}, VECTOR_BODY, now=VECTOR_TS)
    assert not verify(VECTOR_SECRET, _headers("v1,ü"), VECTOR_BODY, now=VECTOR_TS)


def test_new_secrets_are_prefixed_32_byte_keys() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert secret != new_secret()


# -- sender -----------------------------------------------------------------


async def test_sender_delivers_signed_in_order_and_retries(db_url: str) -> None:
    store = await SqlStore.open(db_url, _ignore)
    http = loopback_http()
    secret = await store.webhooks.webhook_secret(TENANT)
    log: list[tuple[str, int, dict[str, Any]]] = []  # (webhook-id, status, payload)
    bad_signatures: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(secret, request.headers, body):
            bad_signatures.append(request.headers.get("webhook-id", ""))
            return web.Response(status=400)
        status = 500 if not log else 200
        log.append((request.headers["webhook-id"], status, json.loads(body)))
        return web.Response(status=status)

    sender = WebhookSender(store.webhooks, http, retry=FAST, poll_interval=0.05)
    try:
        async with receiver({"/hook": hook}) as base:
            for n in (1, 2, 3):
                await store.webhooks.enqueue_webhook(
                    TENANT, "A", f"{base}/hook", {"key": "A", "n": n}
                )
            for n in (1, 2):
                await store.webhooks.enqueue_webhook(
                    TENANT, "B", f"{base}/hook", {"key": "B", "n": n}
                )
            await sender.start()

            async def all_accepted() -> bool:
                return sum(1 for _, status, _ in log if status == 200) == 5

            await _eventually(all_accepted)
    finally:
        await sender.close()
        await http.close()
        await store.close()

    assert bad_signatures == []
    accepted = [payload for _, status, payload in log if status == 200]
    assert [p["n"] for p in accepted if p["key"] == "A"] == [1, 2, 3]
    assert [p["n"] for p in accepted if p["key"] == "B"] == [1, 2]
    # The first request was refused and retried under the same webhook-id.
    first_id = log[0][0]
    assert [status for hook_id, status, _ in log if hook_id == first_id] == [500, 200]
    assert len(log) == 6
    # Nothing for a key went out while an earlier row for it was unacknowledged.
    for key in ("A", "B"):
        seen = [(p["n"], status) for _, status, p in log if p["key"] == key]
        assert [n for n, _ in seen] == sorted(n for n, _ in seen)


async def test_an_old_failing_webhook_is_dead_lettered(db_url: str) -> None:
    clock = [1_700_000_000_000]
    store = await SqlStore.open(db_url, _ignore, clock=lambda: clock[0])
    http = loopback_http()
    hits: list[int] = []

    async def broken(request: web.Request) -> web.Response:
        hits.append(1)
        return web.Response(status=500)

    sender = WebhookSender(
        store.webhooks,
        http,
        retry=FAST,
        max_age_ms=60_000,
        poll_interval=0.02,
        clock=lambda: clock[0],
    )

    async def row() -> Any:
        async with store.engine.connect() as conn:
            return (await conn.execute(select(webhooks))).one()

    try:
        async with receiver({"/hook": broken}) as base:
            await store.webhooks.enqueue_webhook(TENANT, "m1", f"{base}/hook", {"n": 1})
            await sender.start()

            async def retry_recorded() -> bool:
                return (await row()).last_error == "HTTP 500"

            await _eventually(retry_recorded)
            # The clock is frozen, so the retry is not due yet.
            await asyncio.sleep(0.1)
            assert len(hits) == 1
            assert (await row()).state == hooks.PENDING

            clock[0] += 61_000
            sender.wake()

            async def dead() -> bool:
                return bool(await store.webhooks.dead_webhooks(TENANT))

            await _eventually(dead)
            dead_rows = await store.webhooks.dead_webhooks(TENANT)
    finally:
        await sender.close()
        await http.close()
        await store.close()

    assert len(hits) == 2
    assert [(d.attempts, d.last_error, d.payload) for d in dead_rows] == [(2, "HTTP 500", {"n": 1})]
    assert dead_rows[0].ordering_key == "m1"


async def test_claim_takes_one_row_per_key_and_leases_it(db_url: str) -> None:
    clock = [1_700_000_000_000]
    store = await SqlStore.open(db_url, _ignore, clock=lambda: clock[0])
    try:
        a1 = await store.webhooks.enqueue_webhook(TENANT, "A", "http://x/", {"n": 1})
        a2 = await store.webhooks.enqueue_webhook(TENANT, "A", "http://x/", {"n": 2})
        b1 = await store.webhooks.enqueue_webhook(TENANT, "B", "http://x/", {"n": 1})
        # Another tenant's key of the same name is a different sequence.
        o1 = await store.webhooks.enqueue_webhook("t2", "A", "http://x/", {"n": 1})

        first = await store.webhooks.claim_webhooks(10, lease_ms=1_000)
        assert sorted(j.id for j in first) == sorted([a1, b1, o1])
        assert {j.attempts for j in first} == {1}
        assert {j.tenant_id: j.secret for j in first}[
            TENANT
        ] == await store.webhooks.webhook_secret(TENANT)
        assert await store.webhooks.claim_webhooks(10, lease_ms=1_000) == []

        # A crashed sender's claim comes back once the lease runs out.
        clock[0] += 1_001
        again = await store.webhooks.claim_webhooks(10, lease_ms=1_000)
        assert sorted(j.id for j in again) == sorted([a1, b1, o1])
        assert {j.attempts for j in again} == {2}

        await store.webhooks.webhook_done(a1)
        await store.webhooks.webhook_dead(b1, "gone")
        await store.webhooks.webhook_retry(o1, clock[0] + 5_000, "HTTP 503")
        assert [j.id for j in await store.webhooks.claim_webhooks(10, lease_ms=1_000)] == [a2]
        assert [d.id for d in await store.webhooks.dead_webhooks(TENANT)] == [b1]
        assert await store.webhooks.dead_webhooks("t2") == []
    finally:
        await store.close()


async def test_secret_is_created_once_per_tenant(db_url: str) -> None:
    store = await SqlStore.open(db_url, _ignore)
    try:
        secrets = await asyncio.gather(*(store.webhooks.webhook_secret(TENANT) for _ in range(10)))
        assert len(set(secrets)) == 1
        assert secrets[0].startswith("whsec_")
        assert await store.webhooks.webhook_secret("t2") != secrets[0]
    finally:
        await store.close()


# -- receipts ---------------------------------------------------------------


def _message(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "0b9f3a52-0000-4000-8000-000000000001",
        "tenant_id": TENANT,
        "channel_id": "sandbox",
        "destination": "+447700900123",
        "type": "text",
        "text": "hi",
        "content": {"text": {"body": "hi"}},
        "conversation_id": "c0ffee00-0000-0000-0000-000000000001",
        "correlation_id": "order-42",
        "status": "SUBMITTED",
        "priority": 0,
        "due_at": 1,
        "expire_at": None,
        "dispatch_state": "DONE",
        "lease_until": None,
        "attempts": 1,
        "provider_message_id": "p-1",
        "last_error": "",
        "mask": 0,
        "created_at": 1,
        "updated_at": 1,
        "notify_url": "https://example.test/receipts",
        "callback_data": "cb-7",
        "requested_receipts": ["DELIVERED"],
        "segments": 1,
    }
    row.update(overrides)
    return row


async def test_enqueue_receipt_reports_only_requested_statuses(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(messages.insert().values(**_message()))
            await conn.execute(
                messages.insert().values(
                    **_message(id="0b9f3a52-0000-4000-8000-000000000002", notify_url=None)
                )
            )
            await conn.execute(
                messages.insert().values(
                    **_message(id="0b9f3a52-0000-4000-8000-000000000003", requested_receipts=None)
                )
            )
            rows = (await conn.execute(select(messages).order_by(messages.c.id))).all()
            tx = Tx(conn, 1_700_000_000_123)
            await hooks.enqueue_receipt(tx, rows[0], "SUBMITTED", "")
            for r in rows[1:]:
                await hooks.enqueue_receipt(tx, r, "DELIVERED", "")
            assert (await conn.execute(select(webhooks))).all() == []

            await hooks.enqueue_receipt(tx, rows[0], "DELIVERED", "handset ack")
            queued = (await conn.execute(select(webhooks))).all()
    finally:
        await engine.dispose()

    assert len(queued) == 1
    out = queued[0]
    assert (out.tenant_id, out.ordering_key, out.url, out.state) == (
        TENANT,
        rows[0].id,
        "https://example.test/receipts",
        hooks.PENDING,
    )
    assert out.payload == {
        "type": "message.status",
        "timestamp": 1_700_000_000_123,
        "data": {
            "messageId": rows[0].id,
            "correlationId": "order-42",
            "channel": "sandbox",
            "destination": "+447700900123",
            "status": "DELIVERED",
            "reason": "handset ack",
            "callbackData": "cb-7",
            "timestamp": 1_700_000_000_123,
        },
    }


# -- outbound HTTP ----------------------------------------------------------


async def test_post_never_follows_redirects() -> None:
    target_hits: list[int] = []

    async def start(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/target"})

    async def target(request: web.Request) -> web.Response:
        target_hits.append(1)
        return web.Response(status=200)

    http = loopback_http()
    try:
        async with receiver({"/start": start, "/target": target}) as base:
            assert await http.post(
                f"{base}/start", b"{}", {"Content-Type": "application/json"}
            ) == (302)
            with pytest.raises(OutboundError, match="HTTP 302"):
                await http.fetch(f"{base}/start", max_bytes=1024)
    finally:
        await http.close()
    assert target_hits == []


async def test_fetch_is_bounded_and_errors_are_outbound_errors() -> None:
    async def small(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100, content_type="image/png")

    async def streamed(request: web.Request) -> web.StreamResponse:
        # Chunked, so no Content-Length gives the size away up front.
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"y" * 1024)
        await resp.write_eof()
        return resp

    released = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await released.wait()
        return web.Response(status=200)

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "7"})

    http = loopback_http(total_timeout_s=0.3)
    try:
        async with receiver(
            {"/small": small, "/big": streamed, "/slow": slow, "/busy": busy}
        ) as base:
            assert await http.fetch(f"{base}/small", max_bytes=100) == (b"x" * 100, "image/png")
            with pytest.raises(OutboundError, match="exceeds 99"):
                await http.fetch(f"{base}/small", max_bytes=99)
            with pytest.raises(OutboundError, match="exceeds 10000"):
                await http.fetch(f"{base}/big", max_bytes=10_000)
            with pytest.raises(OutboundError, match="timed out"):
                await http.post(f"{base}/slow", b"", {})
            released.set()
            busy_result = await http.post_result(f"{base}/busy", b"", {})
            assert (busy_result.status, busy_result.retry_after_s) == (429, 7)
        # The receiver is gone now: nothing listens on that port.
        with pytest.raises(OutboundError):
            await http.post(f"{base}/small", b"", {})
        with pytest.raises(OutboundError):
            await http.post("ftp://example.test/", b"", {})
    finally:
        await http.close()
