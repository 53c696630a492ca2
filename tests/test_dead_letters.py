"""Webhook dead letters: visible, listed, redriven under their webhook-id, across restarts."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from cim.v1 import webhook_service_pb2 as wpb
from cim.v1 import webhook_service_pb2_grpc as wgrpc
from server.app import Hub
from server.config import Settings
from server.domain.events import EventType
from server.domain.retry import RetryPolicy
from server.storage.store import SqlStore
from server.storage.webhook_schema import webhook_attempts, webhooks
from server.webhooks.sender import WebhookSender
from support.clock import eventually, stays
from support.hub import AUTH_HEADERS, channel_to, rest_call
from support.hub import test_settings as hub_settings
from support.net import loopback_http
from support.receiver import receiver

DEAD_LETTERS = "/api/v1/webhooks/dead-letters"


def _batch(notify_url: str, n: int) -> dict[str, Any]:
    return {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": [f"+4479111{n:05d}"]}],
        "content": {"type": "text", "text": "hi"},
        "notifyUrl": notify_url,
        "requestedReceipts": ["DELIVERED"],
    }


async def _dead(hub: Hub, query: str = "") -> list[dict[str, Any]]:
    status, body = await rest_call(hub, "GET", f"{DEAD_LETTERS}{query}", AUTH_HEADERS)
    assert status == 200, body
    return list(body["results"])


async def _until(check: Any, within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling the hub's API
            await asyncio.sleep(0.05)


def _settings(db_url: str, **overrides: Any) -> Settings:
    return hub_settings(db_url, webhook_retry_base_ms=20, **overrides)


async def test_dead_letters_are_listed_and_redriven_after_a_restart(db_url: str) -> None:
    async with receiver(a=500, b=503) as rx:
        hub = await Hub.start(_settings(db_url, webhook_max_age_ms=300))
        try:
            sent = []
            for n, path in enumerate(("/a", "/a", "/b")):
                status, body = await rest_call(
                    hub, "POST", "/api/v2/message/send", AUTH_HEADERS, _batch(rx.url(path), n)
                )
                assert status == 202, body
                sent.append(body["results"][0]["messageId"])

            async def three_dead() -> bool:
                return len(await _dead(hub)) == 3

            await _until(three_dead)
            listed = await _dead(hub)
            only_a = await _dead(hub, f"?url={rx.url('/a')}")
            first_dead = min(d["deadTime"] for d in listed)
            last_dead = max(d["deadTime"] for d in listed)
            before_any = await _dead(hub, f"?endTime={first_dead}")
            from_last = await _dead(hub, f"?startTime={last_dead}")
            pages: list[str] = []
            token = ""
            while True:
                query = f"?pageSize=1&pageToken={token}" if token else "?pageSize=1"
                status, body = await rest_call(hub, "GET", DEAD_LETTERS + query, AUTH_HEADERS)
                assert status == 200, body
                pages.extend(d["deliveryId"] for d in body["results"])
                token = body["meta"].get("nextPageToken", "")
                if not token:
                    break
        finally:
            await hub.stop(grace=1)

        by_message = {d["messageId"]: d for d in listed}
        assert sorted(by_message) == sorted(sent)
        for d in listed:
            path = "/b" if d["messageId"] == sent[2] else "/a"
            assert d["url"] == rx.url(path)
            assert d["endpoint"] == "NOTIFY_URL"
            assert d["lastHttpStatus"] == (503 if path == "/b" else 500)
            assert d["lastError"] == f"HTTP {d['lastHttpStatus']}"
            assert d["attempts"] >= 2
            assert d["attempts"] == rx.ids(path).count(d["deliveryId"])
            assert d["createTime"] <= d["firstAttemptTime"] < d["lastAttemptTime"] <= d["deadTime"]
            assert d["payload"]["data"]["status"] == "DELIVERED"
        assert sorted(d["messageId"] for d in only_a) == sorted(sent[:2])
        assert before_any == []
        assert [d["deadTime"] for d in from_last] == [last_dead] * len(from_last)
        assert sorted(pages) == sorted(d["deliveryId"] for d in listed)
        assert len(pages) == 3

        # A new hub on the same database; the receivers are back.
        rx.answers.clear()
        hub = await Hub.start(_settings(db_url))
        try:
            b_id = by_message[sent[2]]["deliveryId"]
            status, body = await rest_call(
                hub, "POST", f"{DEAD_LETTERS}/{b_id}:redrive", AUTH_HEADERS, {}
            )
            assert status == 200, body
            await eventually(lambda: b_id in rx.ids("/b", 200))
            async with channel_to(hub) as channel:
                reply = await wgrpc.WebhookServiceStub(channel).RedriveDeadLetters(
                    wpb.RedriveDeadLettersRequest(url=rx.url("/a"))
                )
            assert (reply.redriven, reply.skipped) == (2, 0)
            a_ids = sorted(by_message[m]["deliveryId"] for m in sent[:2])
            await eventually(lambda: sorted(rx.ids("/a", 200)) == a_ids)
            assert await _dead(hub) == []
            status, body = await rest_call(
                hub, "POST", f"{DEAD_LETTERS}/{b_id}:redrive", AUTH_HEADERS, {}
            )
            assert status == 404, body
            status, timeline = await rest_call(
                hub, "GET", f"/api/v1/messages/{sent[2]}/timeline", AUTH_HEADERS
            )
        finally:
            await hub.stop(grace=1)

    # Receivers can de-duplicate: the redrive came under the id the failures had.
    assert rx.ids("/b", 200) == [b_id]
    assert set(rx.ids("/b", 503)) == {b_id}
    posts = [s["webhook"] for s in timeline["data"]["steps"] if s["kind"] == "WEBHOOK_ATTEMPT"]
    assert [p["httpStatus"] for p in posts] == [*([503] * (len(posts) - 1)), 200]
    assert {p["deliveryId"] for p in posts} == {b_id}


async def _endpoint(hub: Hub) -> dict[str, Any]:
    status, body = await rest_call(hub, "GET", "/api/v1/webhooks/endpoint", AUTH_HEADERS)
    assert status == 200, body
    return dict(body["data"]["endpoint"])


async def test_410_disables_the_webhook_which_is_redriven_after_enabling(db_url: str) -> None:
    async with receiver(tenant=410, gone=410) as rx:
        hub = await Hub.start(_settings(db_url))
        try:
            status, _ = await rest_call(
                hub, "POST", "/api/v1/config/webhook", AUTH_HEADERS, {"url": rx.url("/tenant")}
            )
            assert status == 200
            status, body = await rest_call(
                hub, "POST", "/api/v2/message/send", AUTH_HEADERS, _batch(rx.url("/gone"), 1)
            )
            assert status == 202, body

            async def disabled() -> bool:
                return (await _endpoint(hub)).get("state") == "DISABLED"

            await _until(disabled)
            endpoint = await _endpoint(hub)
            # A notifyUrl answering 410 is not asked again.
            await eventually(lambda: len(rx.ids("/gone")) == 1)
            assert await stays(lambda: len(rx.ids("/tenant")) == 1 and len(rx.ids("/gone")) == 1)

            dead = await _dead(hub)
            events = await hub.store.events.events_after("default", 0, 1000)
            refused = await rest_call(
                hub, "POST", f"{DEAD_LETTERS}/{dead[0]['deliveryId']}:redrive", AUTH_HEADERS, {}
            )
            tenant_dead = [d for d in dead if d["endpoint"] == "TENANT"]

            rx.answers.clear()
            status, enabled = await rest_call(
                hub, "POST", "/api/v1/webhooks/endpoint:enable", AUTH_HEADERS, {}
            )
            assert status == 200, enabled
            status, redrive = await rest_call(
                hub, "POST", f"{DEAD_LETTERS}:redrive", AUTH_HEADERS, {"url": rx.url("/tenant")}
            )
            assert status == 200, redrive
            tenant_ids = sorted(d["deliveryId"] for d in tenant_dead)
            await eventually(lambda: set(tenant_ids) <= set(rx.ids("/tenant", 200)))
        finally:
            await hub.stop(grace=1)

    assert endpoint["url"] == rx.url("/tenant")
    assert "410" in endpoint["disabledReason"] and endpoint["disableTime"] > 0
    gone = [d for d in dead if d["endpoint"] == "NOTIFY_URL"]
    assert [(d["lastHttpStatus"], d["attempts"]) for d in gone] == [(410, 1)]
    # The refused POST and everything after it is kept: the first with its 410,
    # the rest never sent.
    first = min(tenant_dead, key=lambda d: int(d["deliveryId"].removeprefix("msg_")))
    assert (first["lastHttpStatus"], first["attempts"]) == (410, 1)
    assert first["deliveryId"] == rx.ids("/tenant", 410)[0]
    held = [d for d in tenant_dead if d is not first]
    assert held and {d["lastError"] for d in held} == {"endpoint disabled"}
    assert {d.get("attempts", 0) for d in held} == {0}
    # The tenant hears of it on its event stream.
    notices = [e.event for e in events if e.event.type is EventType.WEBHOOK_ENDPOINT]
    assert [(n.status, n.data["url"]) for n in notices] == [("DISABLED", rx.url("/tenant"))]
    assert refused[0] == 400 and refused[1]["messageKey"] in (
        "ENDPOINT_DISABLED",
        "ENDPOINT_DISABLED",
    )
    assert enabled["data"]["endpoint"]["state"] == "ENABLED"
    assert redrive["data"]["redriven"] == len(tenant_dead)
    # Redriven under the ids they were first sent or held under.
    assert set(tenant_ids) <= set(rx.ids("/tenant", 200))


async def test_a_webhook_failing_for_the_configured_period_is_disabled(db_url: str) -> None:
    async with receiver(tenant=500) as rx:
        hub = await Hub.start(_settings(db_url, webhook_disable_after_ms=300))
        try:
            status, _ = await rest_call(
                hub, "POST", "/api/v1/config/webhook", AUTH_HEADERS, {"url": rx.url("/tenant")}
            )
            assert status == 200
            status, _ = await rest_call(
                hub, "POST", "/api/v2/message/send", AUTH_HEADERS, _batch("", 2) | {"notifyUrl": ""}
            )
            assert status == 202

            async def disabled() -> bool:
                return (await _endpoint(hub)).get("state") == "DISABLED"

            failing_seen = False

            async def failing_then_disabled() -> bool:
                nonlocal failing_seen
                state = await _endpoint(hub)
                failing_seen = failing_seen or (
                    state.get("state") == "ENABLED" and state.get("failingSince", 0) > 0
                )
                return state.get("state") == "DISABLED"

            await _until(failing_then_disabled)
            endpoint = await _endpoint(hub)
            events = await hub.store.events.events_after("default", 0, 1000)
            hits = len(rx.ids("/tenant"))
            assert await stays(lambda: len(rx.ids("/tenant")) == hits)
        finally:
            await hub.stop(grace=1)
    assert failing_seen
    assert "failed for" in endpoint["disabledReason"]
    assert endpoint["disableTime"] - endpoint["failingSince"] >= 300
    assert hits >= 2
    notices = [e.event for e in events if e.event.type is EventType.WEBHOOK_ENDPOINT]
    assert [n.status for n in notices] == ["DISABLED"]


def test_the_disable_period_comes_from_the_environment() -> None:
    s = Settings.from_env({"CIMHUB_WEBHOOK_DISABLE_AFTER_SECONDS": "90"})
    assert s.webhook_disable_after_ms == 90_000
    assert Settings.from_env({}).webhook_disable_after_ms == 24 * 3600 * 1000


async def test_retry_after_on_429_and_503_is_honoured(db_url: str) -> None:
    clock = [1_700_000_000_000]
    store = await SqlStore.open(db_url, lambda _events: None, clock=lambda: clock[0])
    http = loopback_http()
    sender = WebhookSender(
        store.webhooks,
        http,
        retry=RetryPolicy(base_ms=20, cap_ms=100),
        poll_interval=0.02,
        clock=lambda: clock[0],
    )
    answers = iter([(429, "30"), (503, "7")])
    hits: list[int] = []

    async def busy(request: web.Request) -> web.Response:
        status, after = next(answers, (200, ""))
        hits.append(status)
        return web.Response(status=status, headers={"Retry-After": after} if after else {})

    async def due_in() -> int:
        async with store.engine.connect() as conn:
            row = (await conn.execute(select(webhooks))).one()
        return int(row.next_attempt_at) - clock[0]

    app = web.Application()
    app.router.add_post("/hook", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    waits = []
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        await store.webhooks.enqueue_webhook("t1", "k", url, {"n": 1})
        await sender.start()
        for seen in (1, 2):
            await _until(partial(_settled, store, seen))
            waits.append(await due_in())
            # Without the header the backoff would be at most 100 ms.
            assert await stays(partial(_count_is, hits, seen), duration=0.2)
            clock[0] += waits[-1]
            sender.wake()
        await eventually(lambda: hits == [429, 503, 200])
    finally:
        await sender.close()
        await http.close()
        await runner.cleanup()
        await store.close()
    assert waits == [30_000, 7_000]


def _count_is(hits: list[int], n: int) -> bool:
    return len(hits) == n


async def _settled(store: SqlStore, attempts: int) -> bool:
    async with store.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(webhook_attempts))).scalar()
    return count == attempts
