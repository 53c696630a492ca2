"""One timeline per message: every step, in order, over REST and gRPC, per tenant."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf.json_format import MessageToDict

from adapters.base import Accepted, Delivery, Receipt, ReceiptSink, RetryableProviderError
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import timeline_pb2
from server.cli import main
from server.cli.client.messages import render_timeline
from server.domain.provider import AttemptRecord
from server.domain.status import DeliveryStatus
from support.clock import eventually
from support.hub import (
    AUTH_HEADERS,
    TEST_API_ID,
    TEST_API_KEY,
    channel_to,
    rest_call,
    running_hub,
)
from support.net import serving


class FallbackProvider:
    """Busy once; then RCS fails inside the call and SMS carries the message."""

    def __init__(self) -> None:
        self.calls = 0
        self.provider_id = ""
        self.receipts: ReceiptSink | None = None

    async def start(self, receipts: ReceiptSink) -> None:
        self.receipts = receipts

    async def close(self) -> None:
        return None

    async def send(self, delivery: Delivery) -> Accepted:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(0.02)
            raise RetryableProviderError("provider busy", "503")
        await asyncio.sleep(0.03)
        self.provider_id = f"fb-{uuid.uuid4().hex}"
        return Accepted(
            self.provider_id,
            channel_id="sandbox-sms",
            provider="fake-sms",
            earlier=(
                AttemptRecord(
                    "sandbox-rcs", "fake-rcs", "FAILED", error_code="NO_RCS", reason="no RCS"
                ),
            ),
        )


@asynccontextmanager
async def receiver(answers: list[int]) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP receiver on loopback: answers in turn, then 200."""
    seen: list[dict[str, Any]] = []
    queue = iter(answers)

    async def hook(request: web.Request) -> web.Response:
        status = next(queue, 200)
        seen.append({"id": request.headers["webhook-id"], "status": status, **await request.json()})
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serving(app) as base:
        yield f"{base}/hook", seen


def _statuses(seen: list[dict[str, Any]]) -> list[str]:
    return [
        change["event"].get("status", "")
        for hit in seen
        if hit["status"] == 200
        for change in hit["body"]["changes"]
    ]


async def test_a_timeline_shows_every_step_in_order_over_rest_and_grpc(db_url: str) -> None:
    provider = FallbackProvider()
    async with (
        receiver([500]) as (url, seen),
        running_hub(
            db_url,
            adapters={"sandbox-rcs": provider},
            retry_base_ms=20,
            webhook_retry_base_ms=20,
        ) as hub,
    ):
        status, _ = await rest_call(
            hub, "POST", "/api/v1/config/webhook", AUTH_HEADERS, {"url": url}
        )
        assert status == 200
        status, sent = await rest_call(
            hub,
            "POST",
            "/api/v1/message/send",
            {**AUTH_HEADERS, "X-Request-Id": "req-timeline-1"},
            {
                "channelId": "sandbox-rcs",
                "type": "text",
                "to": {"phone": "+447911123456"},
                "text": {"body": "hello"},
            },
        )
        assert status == 200, sent
        message_id = sent["data"]["messageId"]
        await eventually(lambda: bool(provider.provider_id))
        assert provider.receipts is not None
        await provider.receipts(
            "sandbox-sms", Receipt(provider.provider_id, DeliveryStatus.DELIVERED)
        )
        await eventually(lambda: "DELIVERED" in _statuses(seen))

        status, body = await rest_call(
            hub, "GET", f"/api/v1/messages/{message_id}/timeline", AUTH_HEADERS
        )
        assert status == 200, body
        async with channel_to(hub) as channel:
            reply = await mg.MessagingServiceStub(channel).GetMessageTimeline(
                timeline_pb2.GetMessageTimelineRequest(message_id=message_id)
            )

    data = body["data"]
    assert data["messageId"] == message_id and data["status"] == "DELIVERED"
    steps = data["steps"]
    times = [s["timestamp"] for s in steps]
    assert times == sorted(times)
    core = [
        (s["kind"], s.get("status", ""), s.get("attempt", {}).get("errorCode", ""))
        for s in steps
        if s["kind"] != "WEBHOOK_ATTEMPT"
    ]
    assert core == [
        ("ACCEPTED", "ACCEPTED", ""),
        ("ATTEMPT", "", "503"),
        ("ATTEMPT", "", "NO_RCS"),
        ("FALLBACK", "", ""),
        ("ATTEMPT", "", ""),
        ("STATUS", "SUBMITTED", ""),
        ("RECEIPT", "DELIVERED", ""),
        ("FINAL", "DELIVERED", ""),
    ]
    accepted, busy, no_rcs, fallback, carried = steps_of(steps, "ACCEPTED", "ATTEMPT", "FALLBACK")
    assert accepted["requestId"] == "req-timeline-1"
    # The trace the send was accepted under: the one its reply named.
    assert re.fullmatch(r"[0-9a-f]{32}", accepted["traceId"])
    assert accepted["traceId"] == sent["traceid"]
    assert busy["attempt"]["outcome"] == "FAILED" and busy["attempt"]["latencyMs"] >= 20
    assert no_rcs["attempt"]["channelId"] == "sandbox-rcs"
    assert (fallback["fromChannelId"], fallback["toChannelId"]) == ("sandbox-rcs", "sandbox-sms")
    assert carried["attempt"]["outcome"] == "ACCEPTED"
    assert carried["attempt"]["channelId"] == "sandbox-sms"
    assert carried["attempt"]["providerMessageId"] == provider.provider_id
    assert carried["attempt"]["latencyMs"] >= 30

    posts = [s["webhook"] for s in steps if s["kind"] == "WEBHOOK_ATTEMPT"]
    # The first POST was refused and retried under the same webhook-id.
    assert [p["httpStatus"] for p in posts[:2]] == [500, 200]
    assert posts[0]["deliveryId"] == posts[1]["deliveryId"] == seen[0]["id"]
    assert {p["endpoint"] for p in posts} == {"TENANT"}
    assert all(p["httpStatus"] == 200 for p in posts[1:])
    # One POST per status event of this message, each logged once it was answered.
    assert len(posts) == len(
        [h for h in seen if h["body"]["changes"][0]["event"].get("messageId") == message_id]
    )

    # gRPC answers with the same steps.
    assert [timeline_pb2.TimelineStepKind.Name(s.kind) for s in reply.steps] == [
        f"TIMELINE_STEP_KIND_{s['kind']}" for s in steps
    ]
    assert MessageToDict(reply.steps[0])["requestId"] == "req-timeline-1"
    assert "ACCEPTED" in render_timeline(reply)


def steps_of(steps: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [s for s in steps if s["kind"] in kinds]


async def test_another_tenants_message_has_no_timeline(db_url: str) -> None:
    async with running_hub(db_url) as hub:
        status, sent = await rest_call(
            hub,
            "POST",
            "/api/v1/message/send",
            AUTH_HEADERS,
            {
                "channelId": "sandbox",
                "type": "text",
                "to": {"phone": "+447700900123"},
                "text": {"body": "mine"},
            },
        )
        assert status == 200
        message_id = sent["data"]["messageId"]
        await hub.store.keys.create_tenant("tenant-b")
        b_key = await hub.store.keys.create_api_key("tenant-b")
        b_headers = {"x-api-id": b_key.api_id, "x-api-key": b_key.secret}

        status, body = await rest_call(
            hub, "GET", f"/api/v1/messages/{message_id}/timeline", b_headers
        )
        assert status == 404, body
        async with channel_to(hub) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await mg.MessagingServiceStub(channel).GetMessageTimeline(
                    timeline_pb2.GetMessageTimelineRequest(message_id=message_id),
                    metadata=tuple(b_headers.items()),
                )
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        # The owner still sees it.
        status, _ = await rest_call(
            hub, "GET", f"/api/v1/messages/{message_id}/timeline", AUTH_HEADERS
        )
        assert status == 200


async def test_cimhub_messages_show_prints_the_timeline(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_hub(db_url) as hub:
        status, sent = await rest_call(
            hub,
            "POST",
            "/api/v1/message/send",
            AUTH_HEADERS,
            {
                "channelId": "sandbox",
                "type": "text",
                "to": {"phone": "+447700900123"},
                "text": {"body": "shown"},
            },
        )
        assert status == 200
        message_id = sent["data"]["messageId"]

        async def delivered() -> bool:
            m = await hub.store.messages.get_message("default", message_id)
            return m.status is DeliveryStatus.DELIVERED

        async with asyncio.timeout(10):
            while not await delivered():  # noqa: ASYNC110 - polling the store
                await asyncio.sleep(0.02)
        flags = ["--target", f"127.0.0.1:{hub.grpc_port}", "--api-id", TEST_API_ID]
        flags += ["--api-key", TEST_API_KEY]
        shown = await asyncio.to_thread(main, ["messages", "show", message_id, *flags])
        out = capsys.readouterr().out
        missing = await asyncio.to_thread(main, ["messages", "show", "no-such-id", *flags])
        err = capsys.readouterr().err
    assert shown == 0
    lines = out.splitlines()
    assert lines[0] == f"message {message_id}  DELIVERED"
    kinds = [line.split()[1] for line in lines[1:]]
    assert kinds == ["ACCEPTED", "ATTEMPT", "STATUS", "RECEIPT", "FINAL"]
    assert "ACCEPTED" in lines[2] and "sandbox" in lines[2]
    assert missing == 1 and "NOT_FOUND" in err
