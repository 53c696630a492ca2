"""Per-tenant rate and stream limits, body and message size caps, destination count."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from cim.v1 import outbound_pb2 as o
from support.hub import AUTH_METADATA, channel_to, rest_session, running_hub

LIMIT = 40  # the burst; refill is slow enough not to matter within one burst


def _retry_delay(err: grpc.aio.AioRpcError) -> float | None:
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR) and detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


async def test_a_burst_at_twice_the_limit_is_refused_for_the_excess(db_url: str) -> None:
    async with running_hub(db_url, rate_per_s=0.5, rate_burst=LIMIT) as hub:
        await hub.store.keys.create_tenant("tenant-rest")
        key = await hub.store.keys.create_api_key("tenant-rest")

        async with channel_to(hub) as channel:
            stub = mg.MessagingServiceStub(channel)

            async def one() -> float | None:
                try:
                    await stub.ListMessages(m.ListMessagesRequest(page_size=1))
                    return -1.0
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    return _retry_delay(err)

            grpc_results = await asyncio.gather(*(one() for _ in range(2 * LIMIT)))
        grpc_refused = [r for r in grpc_results if r != -1.0]

        headers = {"x-api-id": key.api_id, "x-api-key": key.secret}
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/messages?pageSize=1"
        async with aiohttp.ClientSession(headers=headers) as http:

            async def fetch() -> tuple[int, str | None, dict[str, Any]]:
                async with http.get(url) as resp:
                    return resp.status, resp.headers.get("Retry-After"), await resp.json()

            rest_results = await asyncio.gather(*(fetch() for _ in range(2 * LIMIT)))
        rest_refused = [r for r in rest_results if r[0] == 429]

    excess = LIMIT
    print(
        f"\nrate limit {LIMIT} burst, {2 * LIMIT} sent per transport, excess {excess}:"
        f" gRPC RESOURCE_EXHAUSTED={len(grpc_refused)}, REST 429={len(rest_refused)}"
    )
    for refused in (len(grpc_refused), len(rest_refused)):
        assert abs(refused - excess) <= excess * 0.1
    assert all(d is not None and d > 0 for d in grpc_refused)
    assert all(status in (200, 429) for status, _, _ in rest_results)
    for _, retry_after, body in rest_refused:
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
        assert body["messageKey"] == "RATE_LIMITED"


async def test_size_caps_and_destination_count(db_url: str) -> None:
    async with running_hub(db_url, max_grpc_message_bytes=64 * 1024) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        async with rest_session() as http:
            over = b"{" + b" " * (1 << 20) + b"}"
            assert len(over) == (1 << 20) + 2
            async with http.post(
                f"{base}/api/v2/message/send",
                data=over[: (1 << 20) + 1],
                headers={"Content-Type": "application/json"},
            ) as resp:
                body = await resp.json()
                assert resp.status == 413, body
                assert body["status"] == 413 and body["messageKey"] == "BODY_TOO_LARGE"

            to = [{"msisdn": [f"+4479111{i:05d}"]} for i in range(1001)]
            send = {
                "channel": "sms",
                "from": "sandbox-sms",
                "to": to,
                "content": {"type": "text", "text": "hi"},
            }
            async with http.post(f"{base}/api/v2/message/send", json=send) as resp:
                body = await resp.json()
                assert resp.status == 400, body
                assert "to" in [e["field"] for e in body["errors"]]

            long_text = {
                **send,
                "to": to[:1],
                "content": {"type": "text", "text": "x" * 5000},
                "callbackData": "y" * 5000,
            }
            async with http.post(f"{base}/api/v2/message/send", json=long_text) as resp:
                body = await resp.json()
                assert resp.status == 400, body
                fields = {e["field"] for e in body["errors"]}
                assert {"content.text", "callbackData"} <= fields, fields

        async with channel_to(hub) as channel:
            big = m.SendMessageRequest(
                channel_id="sandbox",
                type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
                to=o.OutboundContact(phone="+447700900123"),
                text=o.OutboundText(body="z" * (65 * 1024)),
            )
            try:
                await mg.MessagingServiceStub(channel).SendMessage(big)
                raise AssertionError("an oversized message was accepted")
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_concurrent_streams_per_tenant_are_bounded(db_url: str) -> None:
    async with running_hub(db_url, max_streams_per_tenant=2) as hub, channel_to(hub) as channel:
        stub = ng.NotificationServiceStub(channel)
        open_calls = [stub.StreamNotifications(n.StreamNotificationsRequest()) for _ in range(2)]
        for call in open_calls:
            assert (await call.read()).WhichOneof("item") == "heartbeat"
        third = stub.StreamNotifications(n.StreamNotificationsRequest())
        try:
            await third.read()
            raise AssertionError("a third stream was admitted")
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/notifications/stream"
        async with rest_session() as http, http.get(url) as resp:
            assert resp.status == 429
            assert (await resp.json())["messageKey"] == "TOO_MANY_STREAMS"
        open_calls[0].cancel()
        # A closed stream frees its place.
        for _ in range(50):
            again = stub.StreamNotifications(n.StreamNotificationsRequest(), metadata=AUTH_METADATA)
            try:
                await again.read()
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the freed stream place was never reused")
        again.cancel()
        open_calls[1].cancel()
