"""The REST façade end to end: aiohttp test client -> gateway -> real gRPC server."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from cim.v1 import (
    config_service_pb2,
    config_service_pb2_grpc,
    delivery_pb2,
    messaging_service_pb2,
    messaging_service_pb2_grpc,
)
from server.gateway import create_app, route_table

SEED = json.loads((Path(__file__).parent / "seeds" / "outbound_msg.json").read_text())
MAX_BODY = 16 * 1024


def packed(detail: Any) -> any_pb2.Any:
    wrapper = any_pb2.Any()
    wrapper.Pack(detail)
    return wrapper


class Messaging(messaging_service_pb2_grpc.MessagingServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.requests: list[Any] = []

    async def SendMessage(
        self, request: messaging_service_pb2.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> messaging_service_pb2.SendMessageResponse:
        self.metadata.append({k: v for k, v in context.invocation_metadata() or ()})
        self.requests.append(request)
        if request.channel_id == "rich-error":
            status = status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT,
                message="to.phone: not a phone number",
                details=[
                    packed(
                        error_details_pb2.ErrorInfo(
                            reason="VALIDATION_FAILED", domain="cimhub", metadata={"n": "1"}
                        )
                    ),
                    packed(
                        error_details_pb2.BadRequest(
                            field_violations=[
                                error_details_pb2.BadRequest.FieldViolation(
                                    field="to.phone", description="not a phone number"
                                ),
                                error_details_pb2.BadRequest.FieldViolation(
                                    field="contacts[0].phones[0].wa_id", description="too long"
                                ),
                            ]
                        )
                    ),
                ],
            )
            await context.abort_with_status(rpc_status.to_status(status))
        if request.channel_id == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "provider down")
        return messaging_service_pb2.SendMessageResponse(
            message_id=f"msg-{request.channel_id}",
            status=delivery_pb2.DELIVERY_STATUS_ACCEPTED,
            channel_id=request.channel_id,
        )

    async def GetMessage(
        self, request: messaging_service_pb2.GetMessageRequest, context: grpc.aio.ServicerContext
    ) -> messaging_service_pb2.GetMessageResponse:
        if request.message_id != "m1":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"message {request.message_id!r}")
        return messaging_service_pb2.GetMessageResponse(
            message=messaging_service_pb2.Message(
                id="m1",
                status=delivery_pb2.DELIVERY_STATUS_DELIVERED,
                create_time=1677151053951,
                history=[
                    delivery_pb2.StatusChange(
                        status=delivery_pb2.DELIVERY_STATUS_ACCEPTED, timestamp=1677151053951
                    )
                ],
            )
        )

    async def ListMessages(
        self, request: messaging_service_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> messaging_service_pb2.ListMessagesResponse:
        self.requests.append(request)
        results = [
            messaging_service_pb2.Message(
                id=f"m{i}", channel_id=request.channel_id, status=request.status
            )
            for i in range(request.page_size or 1)
        ]
        return messaging_service_pb2.ListMessagesResponse(results=results, next_page_token="p2")


class Config(config_service_pb2_grpc.ConfigServiceServicer):
    async def ListChannels(
        self, request: config_service_pb2.ListChannelsRequest, context: grpc.aio.ServicerContext
    ) -> config_service_pb2.ListChannelsResponse:
        channels = [config_service_pb2.Channel(channel_id="live", contact_type="SMS")]
        if request.sandbox or request.sabdnox:
            channels.append(config_service_pb2.Channel(channel_id="sandbox", sandbox=True))
        return config_service_pb2.ListChannelsResponse(results=channels)


@dataclass
class Harness:
    client: TestClient
    messaging: Messaging
    routes: list[Any] = field(default_factory=list)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    server = grpc.aio.server()
    messaging = Messaging()
    messaging_service_pb2_grpc.add_MessagingServiceServicer_to_server(messaging, server)
    config_service_pb2_grpc.add_ConfigServiceServicer_to_server(Config(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    app = create_app(channel, max_body_bytes=MAX_BODY)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Harness(client, messaging, route_table(app))
    finally:
        await client.close()
        await channel.close()
        await server.stop(None)


def assert_error_envelope(body: dict[str, Any], status: int, key: str) -> None:
    assert body["status"] == status
    assert body["statusKey"] == key
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["messageKey"], str)
    assert isinstance(body["errors"], list)
    assert isinstance(body["timestamp"], int)
    assert body["traceid"]


# -- success -----------------------------------------------------------------------------


async def test_send_seed_body_as_written_is_accepted(harness: Harness) -> None:
    resp = await harness.client.post("/api/v1/message/send", json=SEED)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == 200
    assert body["statusKey"] == "SUCCESS"
    assert body["data"] == {
        "messageId": "msg-91SERVICENUMBER",
        "status": "ACCEPTED",
        "channelId": "91SERVICENUMBER",
    }
    assert isinstance(body["timestamp"], int)
    # The W3C trace id of the request, not its request id.
    assert re.fullmatch(r"[0-9a-f]{32}", body["traceid"])
    assert body["traceid"] != resp.headers["X-Request-Id"]
    sent = harness.messaging.requests[-1]
    assert sent.contacts[0].addresses[0].zip == "94025"


async def test_get_with_path_param(harness: Harness) -> None:
    resp = await harness.client.get("/api/v1/messages/m1")
    assert resp.status == 200
    body = await resp.json()
    message = body["data"]["message"]
    assert message["status"] == "DELIVERED"
    assert message["createTime"] == 1677151053951
    assert message["history"] == [{"status": "ACCEPTED", "timestamp": 1677151053951}]


async def test_list_puts_results_on_top_and_paging_in_meta(harness: Harness) -> None:
    resp = await harness.client.get(
        "/api/v1/messages",
        params=[("pageSize", "2"), ("channel_id", "c9"), ("status", "delivered")],
    )
    assert resp.status == 200
    body = await resp.json()
    assert "data" not in body
    assert body["meta"] == {"nextPageToken": "p2"}
    assert [r["id"] for r in body["results"]] == ["m0", "m1"]
    assert body["results"][0] == {"id": "m0", "channelId": "c9", "status": "DELIVERED"}
    request = harness.messaging.requests[-1]
    assert (request.page_size, request.channel_id) == (2, "c9")


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("", ["live"]),
        ("?sandbox=true", ["live", "sandbox"]),
        ("?sabdnox=true", ["live", "sandbox"]),
        ("?sabdnox=1", ["live", "sandbox"]),
        ("?sabdnox=0", ["live"]),
    ],
)
async def test_list_channels_query_flags(harness: Harness, query: str, ids: list[str]) -> None:
    resp = await harness.client.get(f"/api/v1/config/channels{query}")
    assert resp.status == 200
    body = await resp.json()
    assert [c["channelId"] for c in body["results"]] == ids
    assert body["meta"] == {}


async def test_headers_are_forwarded_as_metadata(harness: Harness) -> None:
    headers = {
        "Authorization": "Bearer t0k",
        "X-Api-Key": "key-1",
        "X-Api-Id": "id-1",
        "X-Request-Id": "req-42",
        "Idempotency-Key": "idem-7",
        "X-Not-Forwarded": "no",
    }
    resp = await harness.client.post(
        "/api/v1/message/send", json={"channelId": "c"}, headers=headers
    )
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == "req-42"
    seen = harness.messaging.metadata[-1]
    assert seen["authorization"] == "Bearer t0k"
    assert seen["x-api-key"] == "key-1"
    assert seen["x-api-id"] == "id-1"
    assert seen["x-request-id"] == "req-42"
    assert seen["idempotency-key"] == "idem-7"
    assert "x-not-forwarded" not in seen


async def test_request_id_is_generated_when_absent(harness: Harness) -> None:
    resp = await harness.client.post("/api/v1/message/send", json={"channelId": "c"})
    request_id = resp.headers["X-Request-Id"]
    assert request_id
    assert harness.messaging.metadata[-1]["x-request-id"] == request_id
    assert re.fullmatch(r"[0-9a-f]{32}", (await resp.json())["traceid"])


async def test_traceparent_is_forwarded_and_names_the_envelope_trace(harness: Harness) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    resp = await harness.client.post(
        "/api/v1/message/send",
        json={"channelId": "c"},
        headers={"traceparent": parent, "tracestate": "vendor=1"},
    )
    assert resp.status == 200
    assert (await resp.json())["traceid"] == "0af7651916cd43dd8448eb211c80319c"
    seen = harness.messaging.metadata[-1]
    assert seen["traceparent"] == parent
    assert seen["tracestate"] == "vendor=1"


async def test_an_error_answer_names_the_callers_trace(harness: Harness) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    resp = await harness.client.post(
        "/api/v1/message/send",
        data=b"{nope",
        headers={"traceparent": parent, "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert (await resp.json())["traceid"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_unusable_request_id_is_replaced(harness: Harness) -> None:
    resp = await harness.client.post(
        "/api/v1/message/send", json={"channelId": "c"}, headers={"X-Request-Id": "x" * 500}
    )
    request_id = resp.headers["X-Request-Id"]
    assert resp.status == 200
    assert request_id != "x" * 500
    assert harness.messaging.metadata[-1]["x-request-id"] == request_id


# -- client errors -----------------------------------------------------------------------


async def test_malformed_json_is_a_400(harness: Harness) -> None:
    resp = await harness.client.post(
        "/api/v1/message/send", data=b'{"channelId": ', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    body = await resp.json()
    assert_error_envelope(body, 400, "INVALID_ARGUMENT")
    assert body["messageKey"] == "MALFORMED_JSON"
    assert body["errors"][0]["field"] == "body"
    assert "malformed JSON" in body["errors"][0]["description"]


async def test_non_object_body_is_a_400(harness: Harness) -> None:
    resp = await harness.client.post("/api/v1/message/send", json=[1, 2])
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["field"] == "body"


async def test_unknown_field_is_a_400_with_its_path(harness: Harness) -> None:
    resp = await harness.client.post("/api/v1/message/send", json={"to": {"phone": "1", "foo": 2}})
    assert resp.status == 400
    body = await resp.json()
    assert_error_envelope(body, 400, "INVALID_ARGUMENT")
    assert body["errors"][0] == {
        "field": "to.foo",
        "code": "VALIDATION_FAILED",
        "description": "unknown field",
    }
    assert harness.messaging.requests == []


async def test_wrong_type_is_a_400_with_its_path(harness: Harness) -> None:
    resp = await harness.client.post(
        "/api/v2/message/send", json={"to": [{"msisdn": ["1", {"bad": True}]}]}
    )
    assert resp.status == 400
    body = await resp.json()
    assert body["errors"][0]["field"] == "to[0].msisdn[1]"


async def test_bad_query_values_and_unknown_params(harness: Harness) -> None:
    resp = await harness.client.get("/api/v1/messages?pageSize=lots")
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["field"] == "pageSize"

    resp = await harness.client.get("/api/v1/messages?colour=red")
    assert resp.status == 400
    body = await resp.json()
    assert body["errors"][0]["field"] == "colour"

    resp = await harness.client.get("/api/v1/messages?status=LOST")
    assert resp.status == 400
    assert "DELIVERED" in (await resp.json())["errors"][0]["description"]


async def test_body_over_the_limit_is_a_413(harness: Harness) -> None:
    big = {"text": {"body": "x" * (MAX_BODY + 1)}}
    resp = await harness.client.post("/api/v1/message/send", json=big)
    assert resp.status == 413
    body = await resp.json()
    assert body["status"] == 413
    assert body["messageKey"] == "BODY_TOO_LARGE"


async def test_chunked_body_over_the_limit_is_a_413(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": {"body": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"x" * 1024
        yield b'"}}'

    resp = await harness.client.post("/api/v1/message/send", data=chunks())
    assert resp.status == 413
    assert (await resp.json())["messageKey"] == "BODY_TOO_LARGE"


async def test_unknown_path_is_an_enveloped_404(harness: Harness) -> None:
    resp = await harness.client.get("/api/v1/nowhere")
    assert resp.status == 404
    assert_error_envelope(await resp.json(), 404, "NOT_FOUND")


# -- gRPC errors -------------------------------------------------------------------------


async def test_rich_error_becomes_field_errors(harness: Harness) -> None:
    resp = await harness.client.post("/api/v1/message/send", json={"channelId": "rich-error"})
    assert resp.status == 400
    body = await resp.json()
    assert_error_envelope(body, 400, "INVALID_ARGUMENT")
    assert body["message"] == "to.phone: not a phone number"
    assert body["messageKey"] == "VALIDATION_FAILED"
    assert body["errors"] == [
        {"field": "to.phone", "code": "VALIDATION_FAILED", "description": "not a phone number"},
        {
            "field": "contacts[0].phones[0].wa_id",
            "code": "VALIDATION_FAILED",
            "description": "too long",
        },
    ]


async def test_not_found_is_a_404(harness: Harness) -> None:
    resp = await harness.client.get("/api/v1/messages/nope")
    assert resp.status == 404
    body = await resp.json()
    assert_error_envelope(body, 404, "NOT_FOUND")
    assert body["message"] == "message 'nope'"
    assert body["errors"] == []


async def test_unavailable_is_a_503(harness: Harness) -> None:
    resp = await harness.client.post("/api/v1/message/send", json={"channelId": "unavailable"})
    assert resp.status == 503
    assert_error_envelope(await resp.json(), 503, "UNAVAILABLE")


async def test_unimplemented_service_is_a_501(harness: Harness) -> None:
    # SessionService is routed but not served by this test server.
    resp = await harness.client.get("/api/v1/sessions/s1")
    assert resp.status == 501
    assert_error_envelope(await resp.json(), 501, "UNIMPLEMENTED")


# -- route table ---------------------------------------------------------------------------


def test_route_table_comes_from_annotations(harness: Harness) -> None:
    by_method = {r.method_full_path: r for r in harness.routes}
    send = by_method["/cim.v1.MessagingService/SendMessage"]
    assert (send.http_method, send.path_template, send.body, send.success_code) == (
        "POST",
        "/api/v1/message/send",
        "*",
        200,
    )
    assert by_method["/cim.v1.MessagingService/SendBatch"].success_code == 202
    get = by_method["/cim.v1.MessagingService/GetMessage"]
    assert get.aiohttp_path == "/api/v1/messages/{message_id}"
    assert [p.field_path for p in get.path_params] == ["message_id"]
    assert by_method["/cim.v1.ConfigService/ListChannels"].success_code == 200
    stream = by_method["/cim.v1.NotificationService/StreamNotifications"]
    assert (stream.http_method, stream.path_template, stream.streaming) == (
        "GET",
        "/api/v1/notifications/stream",
        True,
    )
    assert not any(r.streaming for r in harness.routes if r is not stream)
