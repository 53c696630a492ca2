"""GET /api/v1/quota: the caller's request budget, channel pacing and the queue ahead."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import grpc
import pytest

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from fakes.providers import HoldingProvider
from server.config import DEFAULT_CHANNELS
from support.clock import eventually
from support.hub import channel_to, rest_session, running_hub

SMS = "sandbox-sms"
BURST = 20


def batch(count: int, start: int, **extra: Any) -> m.SendBatchRequest:
    return m.SendBatchRequest(
        channel="sms",
        from_address="CNNECT",
        to=[m.BatchDestination(msisdn=[f"+4479112{i:05d}" for i in range(start, start + count)])],
        content=m.BatchContent(type="text", text="hello"),
        **extra,
    )


async def test_quota_reports_budget_pacing_and_the_queue_ahead_by_priority(db_url: str) -> None:
    provider = HoldingProvider()
    # One send at a time at 5 a second: the first message stays at the
    # provider and the rest wait behind it.
    channels = tuple(
        replace(c, tps=5, max_in_flight=1) if c.channel_id == SMS else c for c in DEFAULT_CHANNELS
    )
    async with (
        running_hub(
            db_url,
            adapters={SMS: provider},
            channels=channels,
            rate_per_s=0.001,
            rate_burst=BURST,
        ) as hub,
        channel_to(hub) as channel,
        rest_session() as http,
    ):
        stub = mg.MessagingServiceStub(channel)
        await stub.SendBatch(batch(10, 0, priority=2))
        await eventually(lambda: len(provider.attempts) == 1)
        await stub.SendBatch(batch(3, 100, priority=1))
        await stub.SendBatch(batch(4, 200, send_at=str(int(time.time()) + 3600)))
        normal = await stub.GetQuota(m.GetQuotaRequest(channel_id=SMS))
        low = await stub.GetQuota(m.GetQuotaRequest(channel_id=SMS, priority=1))
        high = await stub.GetQuota(m.GetQuotaRequest(channel_id=SMS, priority=3))
        everything = await stub.GetQuota(m.GetQuotaRequest())
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.GetQuota(m.GetQuotaRequest(channel_id="no-such-channel"))
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/quota?channelId={SMS}"
        async with http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            rest = (await resp.json())["data"]
        provider.release()
    [sms] = normal.channels
    assert (sms.channel_id, sms.contact_type, sms.tps, sms.max_in_flight) == (SMS, "SMS", 5, 1)
    assert sms.in_flight == 1
    # 9 due at priority 2 and the one at the provider; the priority-1 ones go after.
    assert sms.queue_depth == 10
    assert sms.estimated_wait_ms == 2000  # 10 sends at 5 a second
    assert sms.scheduled == 4
    assert low.channels[0].queue_depth == 13
    assert high.channels[0].queue_depth == 1
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    assert [c.channel_id for c in everything.channels] == sorted(
        c.channel_id for c in DEFAULT_CHANNELS
    )
    # Each call so far took one request from the budget, which refills too
    # slowly to matter; the reply counts the call that asks.
    assert normal.rate.burst == BURST and normal.rate.per_second == pytest.approx(0.001)
    assert normal.rate.remaining == BURST - 4
    assert high.rate.remaining == BURST - 6
    assert normal.rate.full_in_ms > 0
    assert rest["rate"]["remaining"] == BURST - 9
    assert rest["channels"][0]["queueDepth"] == 10
    assert rest["channels"][0]["estimatedWaitMs"] == 2000
