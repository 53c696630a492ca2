"""The send pipeline end to end: exactly once, idempotent, on time, in order, reported."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from adapters.sandbox import SandboxAdapter
from fakes.providers import FlakyProvider, HappyProvider
from server.api.context import DEFAULT_TENANT
from server.domain.paging import MESSAGES
from server.domain.status import DeliveryStatus
from server.domain.webhook_signing import verify
from server.storage.message_schema import messages
from server.storage.webhook_schema import webhooks
from server.webhooks.sender import WebhookSender
from support.clock import FakeClock, eventually, stays
from support.hub import rest_session, running_hub
from support.replicas import wait_until

# What a claim or a webhook delivery waits out before it is tried again, past
# which a lost outcome would show up as a second send: waits for "nothing
# more will come" cover it, and a little more for the retry itself.
WEBHOOK_LEASE_MS: int = inspect.signature(WebhookSender).parameters["lease_ms"].default
AFTER_LEASE_S = 15.0

V2 = "/api/v2/message/send"


async def _unsettled_messages(hub: Any) -> int:
    """Messages still to be sent or whose send has no recorded outcome yet."""
    async with hub.store.engine.connect() as conn:
        query = select(func.count()).where(messages.c.dispatch_state.in_(("PENDING", "CLAIMED")))
        return int((await conn.execute(query)).scalar_one())


async def _pending_webhooks(hub: Any) -> int:
    """Webhook deliveries not yet done: due, retrying or under a lease."""
    async with hub.store.engine.connect() as conn:
        query = select(func.count()).where(webhooks.c.state == "PENDING")
        return int((await conn.execute(query)).scalar_one())


def _msisdn(i: int) -> str:
    return f"+4479111{i:05d}"


async def _post(
    hub: Any, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with (
        rest_session() as http,
        http.post(
            f"http://127.0.0.1:{hub.http_port}{V2}", json=body, headers=headers or {}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_thousand_destinations_reach_the_provider_exactly_once_rendered(
    db_url: str,
) -> None:
    sandbox = SandboxAdapter("sandbox-sms", delivery_delay=0.01, record=True)
    groups = [
        {"msisdn": [_msisdn(i)], "correlationId": f"row-{i}", "substitutions": {"name": f"N{i}"}}
        for i in range(1000)
    ]
    body = {
        "channel": "sms",
        "from": "CNNECT",
        "to": groups,
        "substitutions": {"name": "nobody", "area": "EC1"},
        "content": {"type": "text", "text": "Hi $(name), outage in $(area)"},
    }
    async with running_hub(db_url, adapters={"sandbox-sms": sandbox}) as hub:
        status, reply = await _post(hub, body)
        assert status == 202, reply
        ids = {r["messageId"]: r["correlationId"] for r in reply["results"]}
        assert len(ids) == 1000
        await eventually(lambda: len(sandbox.sent) >= 1000, within=30)

        # A claim whose outcome was lost is sent again once its lease lapses:
        # wait until every outcome is recorded (or a duplicate shows up).
        async def settled() -> bool:
            return len(sandbox.sent) > 1000 or await _unsettled_messages(hub) == 0

        await wait_until(settled, hub.settings.dispatch_lease_ms / 1000 + AFTER_LEASE_S, 0.05)
    sent = {d.message_id: d for d in sandbox.sent}
    assert len(sandbox.sent) == 1000 and set(sent) == set(ids)
    for message_id, correlation in ids.items():
        i = int(correlation.removeprefix("row-"))
        assert sent[message_id].text == f"Hi N{i}, outage in EC1"
        assert sent[message_id].destination == _msisdn(i)


async def test_fifty_concurrent_retries_with_one_key_make_one_message(db_url: str) -> None:
    body = {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": [_msisdn(1), _msisdn(2)]}],
        "content": {"type": "text", "text": "once"},
    }
    async with running_hub(db_url) as hub:
        replies = await asyncio.gather(
            *(_post(hub, body, {"Idempotency-Key": "k-50"}) for _ in range(50))
        )
        changed = await _post(
            hub, {**body, "content": {"type": "text", "text": "twice"}}, {"Idempotency-Key": "k-50"}
        )
        listed = await hub.store.messages.list_messages(
            DEFAULT_TENANT, page=MESSAGES.request(DEFAULT_TENANT, 100, "")
        )
    assert {s for s, _ in replies} == {202}
    id_sets = {tuple(r["messageId"] for r in reply["results"]) for _, reply in replies}
    assert len(id_sets) == 1
    assert sorted(m.id for m in listed.items) == sorted(next(iter(id_sets)))
    assert changed[0] == 409 and changed[1]["messageKey"] == "IDEMPOTENCY_KEY_REUSED"


def _sms(**extra: Any) -> dict[str, Any]:
    return {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": [_msisdn(7)]}],
        "content": {"type": "text", "text": "hi"},
        **extra,
    }


async def test_send_at_and_expiry_follow_the_clock(db_url: str) -> None:
    clock = FakeClock()
    provider = HappyProvider()
    async with running_hub(db_url, adapters={"sandbox-sms": provider}, clock=clock) as hub:
        due_s = clock.now // 1000 + 60
        status, later = await _post(hub, _sms(sendAt=str(due_s)))
        assert status == 202 and later["results"][0]["status"] == "SCHEDULED"
        status, doomed = await _post(hub, _sms(sendAt=str(due_s + 10), validity=30))
        assert status == 202
        assert await stays(lambda: not provider.attempts)
        clock.advance(60_000)
        hub.dispatcher.wake()
        await eventually(lambda: len(provider.attempts) == 1)
        assert provider.attempts[0].message_id == later["results"][0]["messageId"]
        clock.advance(40_001)  # past the second message's expiry before it was ever due-checked
        hub.dispatcher.wake()
        doomed_id = doomed["results"][0]["messageId"]

        async def expired() -> bool:
            return (
                await hub.store.messages.get_message(DEFAULT_TENANT, doomed_id)
            ).status is DeliveryStatus.EXPIRED

        async with asyncio.timeout(10):
            while not await expired():  # noqa: ASYNC110 - the state lives in the database
                await asyncio.sleep(0.05)
    assert len(provider.attempts) == 1


async def test_due_messages_go_out_highest_priority_first(db_url: str) -> None:
    clock = FakeClock()
    provider = HappyProvider()
    async with running_hub(db_url, adapters={"sandbox-sms": provider}, clock=clock) as hub:
        due = str(clock.now // 1000 + 5)
        by_id = {}
        for priority in (1, 3, 2, 1, 3):
            _, reply = await _post(hub, _sms(sendAt=due, priority=priority))
            by_id[reply["results"][0]["messageId"]] = priority
        clock.advance(5_000)
        hub.dispatcher.wake()
        await eventually(lambda: len(provider.attempts) == 5)
    assert [by_id[a.message_id] for a in provider.attempts] == [3, 3, 2, 1, 1]


async def test_retries_follow_the_backoff_schedule(db_url: str) -> None:
    clock = FakeClock()
    provider = FlakyProvider(failures=2)
    async with running_hub(
        db_url,
        adapters={"sandbox-sms": provider},
        clock=clock,
        retry_base_ms=1_000,
        retry_cap_ms=60_000,
    ) as hub:
        status, reply = await _post(hub, _sms())
        assert status == 202
        await eventually(lambda: len(provider.attempts) == 1)
        # First retry is due 500-1000 ms later (full jitter over the upper half).
        clock.advance(499)
        hub.dispatcher.wake()
        assert await stays(lambda: len(provider.attempts) == 1)
        clock.advance(501)
        hub.dispatcher.wake()
        await eventually(lambda: len(provider.attempts) == 2)
        # Second retry: 1000-2000 ms after the second failure.
        clock.advance(999)
        hub.dispatcher.wake()
        assert await stays(lambda: len(provider.attempts) == 2)
        clock.advance(1_001)
        hub.dispatcher.wake()
        await eventually(lambda: len(provider.attempts) == 3)
        message_id = reply["results"][0]["messageId"]

        async def submitted() -> bool:
            return (
                await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
            ).status is DeliveryStatus.SUBMITTED

        async with asyncio.timeout(10):
            while not await submitted():  # noqa: ASYNC110 - the state lives in the database
                await asyncio.sleep(0.05)


async def test_receipts_reach_the_notify_url_signed_filtered_and_retried(db_url: str) -> None:
    hits: list[tuple[dict[str, str], bytes]] = []
    answers = iter([500])

    async def hook(request: web.Request) -> web.Response:
        hits.append((dict(request.headers), await request.read()))
        return web.Response(status=next(answers, 200))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with running_hub(db_url, webhook_retry_base_ms=50) as hub:
            status, reply = await _post(
                hub,
                _sms(
                    notifyUrl=f"http://127.0.0.1:{port}/hook",
                    requestedReceipts=["DELIVERED"],
                    callbackData="cb-42",
                ),
            )
            assert status == 202
            await eventually(lambda: len(hits) >= 2)
            message_id = reply["results"][0]["messageId"]

            # Nothing more can come once the message is final and no delivery
            # is left, not even one under a lease whose outcome was lost.
            async def settled() -> bool:
                if len(hits) > 2:
                    return True
                message = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
                return message.status is DeliveryStatus.DELIVERED and (
                    await _pending_webhooks(hub) == 0
                )

            await wait_until(settled, WEBHOOK_LEASE_MS / 1000 + AFTER_LEASE_S, 0.05)
            secret = await hub.store.webhooks.webhook_secret(DEFAULT_TENANT)
    finally:
        await runner.cleanup()
    assert len(hits) == 2, [json.loads(b) for _, b in hits]
    (first_headers, _), (second_headers, second_body) = hits
    assert first_headers["webhook-id"] == second_headers["webhook-id"]
    for headers, raw in hits:
        assert verify(secret, headers, raw)
        assert not verify(secret, headers, raw + b" ")
    payload = json.loads(second_body)
    assert payload["data"]["status"] == "DELIVERED"
    assert payload["data"]["callbackData"] == "cb-42"
    assert payload["data"]["messageId"] == reply["results"][0]["messageId"]


async def test_templates_render_with_blank_fallback_and_need_approval(db_url: str) -> None:
    sandbox = SandboxAdapter("sandbox-sms", delivery_delay=0.01, record=True)
    async with running_hub(db_url, adapters={"sandbox-sms": sandbox}) as hub:
        approved = await hub.store.config.create_template(
            DEFAULT_TENANT,
            code="OUTAGE",
            lang="en",
            body="Dear $(name), power returns at $(time).",
            approvals={"sandbox-sms": "APPROVED"},
        )
        pending = await hub.store.config.create_template(
            DEFAULT_TENANT,
            code="PROMO",
            lang="en",
            body="Deal!",
            approvals={"sandbox-sms": "PENDING"},
        )
        base = {
            "channel": "sms",
            "from": "CNNECT",
            "to": [{"msisdn": [_msisdn(3)], "substitutions": {"name": "Ana"}}],
        }
        status, reply = await _post(hub, {**base, "template": {"id": approved.id}})
        assert status == 202, reply
        refused_status, refused = await _post(
            hub, {**base, "template": {"code": "PROMO", "lang": "en"}}
        )
        await eventually(lambda: len(sandbox.sent) == 1)
    assert sandbox.sent[0].text == "Dear Ana, power returns at ."
    assert sandbox.sent[0].content.template.code == "OUTAGE"
    assert refused_status == 400 and refused["messageKey"] == "TEMPLATE_NOT_APPROVED"
    assert pending.code == "PROMO"
