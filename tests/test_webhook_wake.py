"""The webhook sender is woken by the commits that queued a webhook, and only by them.

Both hubs poll once every 30 s, far longer than any wait here, so whatever
the sender does within a test it did because a commit woke it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from adapters.sandbox import SandboxAdapter
from server.app import Hub
from server.storage.message_schema import messages
from support.clock import eventually
from support.hub import AUTH_HEADERS, rest_call, running_hub
from support.receiver import receiver

SLOW_POLL_S = 30.0
SENDS = 20


def _send(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": [f"+4479111{n:05d}"]}],
        "content": {"type": "text", "text": "hi"},
        **extra,
    }


async def _post(hub: Hub, body: dict[str, Any]) -> None:
    status, reply = await rest_call(hub, "POST", "/api/v2/message/send", AUTH_HEADERS, body)
    assert status == 202, reply


async def _delivered(hub: Hub) -> int:
    async with hub.store.engine.connect() as conn:
        query = select(func.count()).where(messages.c.status == "DELIVERED")
        return int((await conn.execute(query)).scalar_one())


def _count_claims(hub: Hub) -> list[int]:
    """Counts the sender's looks at the outbox from now on."""
    rows = hub.store.webhooks
    looks = [0]
    claim = rows.claim_webhooks

    async def counted(limit: int, lease_ms: int) -> Any:
        looks[0] += 1
        return await claim(limit, lease_ms)

    rows.claim_webhooks = counted  # type: ignore[method-assign]
    return looks


async def test_a_commit_that_queues_a_webhook_wakes_the_sender(db_url: str) -> None:
    sandbox = SandboxAdapter("sandbox-sms", delivery_delay=0.01)
    async with (
        receiver() as rx,
        running_hub(
            db_url, adapters={"sandbox-sms": sandbox}, dispatch_poll_interval=SLOW_POLL_S
        ) as hub,
    ):
        await asyncio.sleep(0.2)  # past the sender's first look, made at start
        await _post(hub, _send(1, notifyUrl=rx.url("/hook"), requestedReceipts=["DELIVERED"]))
        # Within a fraction of the poll: only the commit's wake-up can explain it.
        await eventually(lambda: len(rx.hits) == 1, within=SLOW_POLL_S / 3)


async def test_commits_that_queue_no_webhook_leave_the_sender_asleep(db_url: str) -> None:
    sandbox = SandboxAdapter("sandbox-sms", delivery_delay=0.01)
    async with running_hub(
        db_url, adapters={"sandbox-sms": sandbox}, dispatch_poll_interval=SLOW_POLL_S
    ) as hub:
        await asyncio.sleep(0.2)
        looks = _count_claims(hub)
        for n in range(SENDS):
            await _post(hub, _send(n))
        # Each message commits three times (accepted, sent, delivered), each
        # with its events, and none queues a webhook.
        async with asyncio.timeout(SLOW_POLL_S / 3):
            while await _delivered(hub) < SENDS:  # noqa: ASYNC110 - polling the hub's store
                await asyncio.sleep(0.02)
        assert looks[0] == 0
