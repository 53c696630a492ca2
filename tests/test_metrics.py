"""/metrics: the families move with what the hub does, on both engines."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from cim.v1 import outbound_pb2 as o
from fakes.providers import FlakyProvider, RejectingProvider
from server.domain.models import OutboundDraft, OutboundMessage
from server.domain.retry import RetryPolicy
from server.observability.metrics import HubMetrics
from server.storage.store import SqlStore
from server.webhooks.sender import WebhookSender
from support.hub import AUTH_HEADERS, channel_to, running_hub
from support.metrics import parse, scrape, value
from support.net import loopback_http

PHONE = "+447700900123"
# Channels of a real contact type check the number.
MOBILE = "+447911123456"
SEND = "/cim.v1.MessagingService/SendMessage"
# Every label the hub may put on a series; anything else is a cardinality leak.
ALLOWED_LABELS = {"transport", "method", "code", "channel", "priority", "status", "outcome"}
ALLOWED_LABELS |= {"scope", "le"}


def _text(channel_id: str = "sandbox", phone: str = PHONE) -> m.SendMessageRequest:
    return m.SendMessageRequest(
        channel_id=channel_id,
        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
        to=o.OutboundContact(phone=phone),
        text=o.OutboundText(body="metrics please"),
    )


async def _wait_status(stub: mg.MessagingServiceStub, message_id: str, status: int) -> None:
    async with asyncio.timeout(10):
        while True:
            got = await stub.GetMessage(m.GetMessageRequest(message_id=message_id))
            if got.message.status == status:
                return
            await asyncio.sleep(0.02)


async def _eventually(port: int, check: Any, **headers: str) -> dict[Any, float]:
    """Scrape until check(samples) holds: counters land after their commit."""
    async with asyncio.timeout(10):
        while True:
            samples = await scrape(port, **headers)
            if check(samples):
                return samples
            await asyncio.sleep(0.05)


async def test_sends_move_the_message_dispatch_and_request_families(db_url: str) -> None:
    flaky = FlakyProvider(failures=1)
    adapters = {"sandbox-sms": RejectingProvider(), "sandbox-rcs": flaky}
    async with (
        running_hub(db_url, adapters=adapters, retry_base_ms=20, retry_cap_ms=50) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        before = await scrape(hub.http_port)
        delivered = [(await stub.SendMessage(_text())).message_id for _ in range(3)]
        failed = (await stub.SendMessage(_text("sandbox-sms", MOBILE))).message_id
        retried = (await stub.SendMessage(_text("sandbox-rcs", MOBILE))).message_id
        for message_id in delivered:
            await _wait_status(stub, message_id, d.DELIVERY_STATUS_DELIVERED)
        await _wait_status(stub, failed, d.DELIVERY_STATUS_FAILED)
        await _wait_status(stub, retried, d.DELIVERY_STATUS_SUBMITTED)
        # One REST send: counted once, as REST, not again as the gRPC call it becomes.
        async with (
            aiohttp.ClientSession(headers=AUTH_HEADERS) as http,
            http.post(
                f"http://127.0.0.1:{hub.http_port}/api/v1/message/send",
                json={"channelId": "sandbox", "type": "TEXT", "to": {"phone": PHONE},
                      "text": {"body": "via rest"}},
            ) as resp,
        ):  # fmt: skip
            assert resp.status == 200, await resp.text()
            rest_id = (await resp.json())["data"]["messageId"]
        await _wait_status(stub, rest_id, d.DELIVERY_STATUS_DELIVERED)
        after = await _eventually(
            hub.http_port,
            lambda s: value(s, "cimhub_messages_final_total", status="DELIVERED") >= 4,
        )

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("cimhub_messages_accepted_total") == 6
    assert moved("cimhub_messages_accepted_total", channel="sandbox") == 4
    assert moved("cimhub_messages_final_total", channel="sandbox", status="DELIVERED") == 4
    assert moved("cimhub_messages_final_total", channel="sandbox-sms", status="FAILED") == 1
    assert moved("cimhub_messages_final_total") == 5
    assert moved("cimhub_dispatch_attempts_total", channel="sandbox", outcome="accepted") == 4
    assert (
        moved("cimhub_dispatch_attempts_total", channel="sandbox-sms", outcome="permanent_error")
        == 1
    )
    assert (
        moved("cimhub_dispatch_attempts_total", channel="sandbox-rcs", outcome="retryable_error")
        == 1
    )
    assert moved("cimhub_dispatch_attempts_total", channel="sandbox-rcs", outcome="accepted") == 1
    assert moved("cimhub_provider_request_duration_seconds_count") == 7
    assert moved("cimhub_accept_to_provider_seconds_count") == 5
    assert moved("cimhub_accept_to_delivered_seconds_count") == 4
    grpc_sends = {"transport": "grpc", "method": SEND, "code": "OK"}
    assert moved("cimhub_requests_total", **grpc_sends) == 5
    assert moved("cimhub_request_duration_seconds_count", **grpc_sends) == 5
    rest_sends = {"transport": "rest", "method": "POST /api/v1/message/send", "code": "200"}
    assert moved("cimhub_requests_total", **rest_sends) == 1
    assert moved("cimhub_request_duration_seconds_count", **rest_sends) == 1
    assert moved("cimhub_db_commit_duration_seconds_count") > 0
    assert moved("cimhub_db_commit_batch_size_count") > 0
    # /metrics itself is never a request.
    assert not any("/metrics" in dict(ls).get("method", "") for _, ls in after)

    # No series is labelled with a message id or an address, and no label is
    # outside the small operator-defined set.
    for name, labels in after:
        assert {k for k, _ in labels} <= ALLOWED_LABELS, (name, labels)
        for _, label_value in labels:
            for address in (PHONE, MOBILE):
                assert address.lstrip("+") not in label_value
            for message_id in (*delivered, failed, retried, rest_id):
                assert message_id not in label_value


async def test_refusals_are_counted_by_code_and_limit_scope(db_url: str) -> None:
    async with (
        running_hub(db_url, rate_per_s=0.001, rate_burst=1) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        await stub.SendMessage(_text())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(_text())
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{hub.http_port}/no/such/path") as resp,
        ):
            assert resp.status == 404
        samples = await scrape(hub.http_port)
    assert value(samples, "cimhub_rate_limited_total", scope="rate") == 1
    assert value(samples, "cimhub_requests_total", method=SEND, code="RESOURCE_EXHAUSTED") == 1
    assert value(samples, "cimhub_requests_total", method=SEND, code="OK") == 1
    assert value(samples, "cimhub_requests_total", method="unmatched", code="404") == 1


async def test_open_streams_are_counted_by_transport(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = ng.NotificationServiceStub(channel)
        grpc_stream = stub.StreamNotifications(n.StreamNotificationsRequest())
        await grpc_stream.read()
        async with (
            aiohttp.ClientSession(headers=AUTH_HEADERS) as http,
            http.get(f"http://127.0.0.1:{hub.http_port}/api/v1/notifications/stream") as sse,
        ):
            assert sse.status == 200, await sse.text()
            await sse.content.readline()
            open_ = await scrape(hub.http_port)
        grpc_stream.cancel()
        closed = await _eventually(
            hub.http_port, lambda s: value(s, "cimhub_stream_subscribers") == 0
        )
    assert value(open_, "cimhub_stream_subscribers", transport="grpc") == 1
    assert value(open_, "cimhub_stream_subscribers", transport="rest") == 1
    assert value(closed, "cimhub_requests_total", transport="rest", code="200") >= 1


async def test_a_token_guards_metrics_on_both_listeners(db_url: str) -> None:
    async with running_hub(db_url, metrics_token="s3cret", metrics_port=0) as hub:
        assert hub.metrics_port is not None
        async with aiohttp.ClientSession() as http:
            for port in (hub.http_port, hub.metrics_port):
                url = f"http://127.0.0.1:{port}/metrics"
                async with http.get(url) as resp:
                    assert resp.status == 401
                async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
                    assert resp.status == 401
                samples = await scrape(port, Authorization="Bearer s3cret")
                assert ("cimhub_webhook_dead_letters", frozenset()) in samples


async def test_metrics_switched_off_serve_nothing(db_url: str) -> None:
    async with running_hub(db_url, metrics_enabled=False) as hub:
        assert hub.metrics is None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{hub.http_port}/metrics") as resp,
        ):
            assert resp.status == 404
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{hub.http_port}/openapi.json") as resp,
        ):
            assert "/metrics" not in (await resp.json())["paths"]


def _draft(channel_id: str, priority: int, due_at: int) -> OutboundDraft:
    return OutboundDraft(
        channel_id=channel_id,
        destination=PHONE,
        type="text",
        text="hi",
        content={"text": {"body": "hi"}},
        conversation_id="c0ffee00-0000-0000-0000-000000000001",
        priority=priority,
        due_at=due_at,
    )


def _render(created: Any) -> bytes:
    return b""


async def test_outbox_gauges_read_pending_rows_and_dead_letters(db_url: str) -> None:
    clock = [1_700_000_000_000]
    store = await SqlStore.open(db_url, lambda _events: None, clock=lambda: clock[0])
    metrics = HubMetrics(outbox=store.outbox.outbox_stats, clock_ms=lambda: clock[0])
    http = loopback_http()
    sender = WebhookSender(
        store.webhooks,
        http,
        retry=RetryPolicy(base_ms=10, cap_ms=10),
        max_age_ms=0,
        poll_interval=0.02,
        clock=lambda: clock[0],
        observer=metrics,
    )

    async def broken(_request: web.Request) -> web.Response:
        return web.Response(status=500)

    try:
        now = clock[0]
        drafts = [
            _draft("a", 1, 0),
            _draft("a", 3, now + 60_000),
            _draft("b", 2, now + 60_000),
        ]
        created: list[OutboundMessage] = []
        for draft in drafts:
            created += (await store.messages.accept("t1", [draft], None, _render)).messages
        # Due five seconds after the first.
        clock[0] += 5_000
        created += (await store.messages.accept("t1", [_draft("a", 1, 0)], None, _render)).messages
        # A dispatched row leaves the outbox.
        claimed = await store.outbox.claim_due(1, 60_000, channels=["a"])
        assert [c.channel_id for c in claimed] == ["a"]
        app = web.Application()
        app.router.add_post("/hook", broken)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        await store.webhooks.enqueue_webhook("t1", "k", f"http://127.0.0.1:{port}/hook", {"n": 1})
        await sender.start()
        async with asyncio.timeout(10):
            while True:
                if await store.webhooks.dead_webhooks("t1"):
                    break
                await asyncio.sleep(0.02)
        clock[0] += 6_000
        await metrics.refresh()
        text = metrics.render().decode()
        await runner.cleanup()
    finally:
        await sender.close()
        await http.close()
        await store.close()
    samples = parse(text)
    # The oldest due row of "a" went to the dispatcher; the other waits.
    assert value(samples, "cimhub_outbox_depth", channel="a", priority="1") == 1
    assert value(samples, "cimhub_outbox_depth", channel="a", priority="3") == 1
    assert value(samples, "cimhub_outbox_depth", channel="b", priority="2") == 1
    assert value(samples, "cimhub_outbox_depth") == 3
    assert value(samples, "cimhub_outbox_oldest_age_seconds", channel="a") == 6.0
    # Scheduled for later is waiting, not late.
    assert ("cimhub_outbox_oldest_age_seconds", frozenset({("channel", "b")})) not in samples
    assert value(samples, "cimhub_webhook_dead_letters") == 1
    assert value(samples, "cimhub_webhook_deliveries_total", outcome="dead") == 1
    assert "# HELP cimhub_outbox_depth" in text
    for family in ("cimhub_outbox_depth", "cimhub_outbox_oldest_age_seconds"):
        help_line = next(line for line in text.splitlines() if line.startswith(f"# HELP {family}"))
        assert "shared" in help_line and "every replica" in help_line


async def test_the_outbox_is_read_at_most_once_per_interval(db_url: str) -> None:
    clock = [1_700_000_000_000]
    reads: list[int] = []
    store = await SqlStore.open(db_url, lambda _events: None, clock=lambda: clock[0])

    async def counted() -> Any:
        reads.append(clock[0])
        return await store.outbox.outbox_stats()

    metrics = HubMetrics(outbox=counted, outbox_max_age_s=2.0, clock_ms=lambda: clock[0])
    try:
        for _ in range(5):
            await metrics.refresh()
        clock[0] += 2_000
        await metrics.refresh()
    finally:
        await store.close()
    assert len(reads) == 2
