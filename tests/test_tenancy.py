"""One tenant's ids mean nothing to another: the answer is the same 404 as for a missing id."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import grpc
from aiohttp import web

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from cim.v1 import session_service_pb2 as s
from cim.v1 import session_service_pb2_grpc as sg
from support.clock import eventually
from support.hub import AUTH_HEADERS, rest_call, running_hub
from support.inbound import inbound_hub, receive, seed, text_message, wrapper

SEND = {
    "channel": "sms",
    "from": "sandbox-sms",
    "to": [{"msisdn": ["+447911100001"]}],
    "content": {"type": "text", "text": "for tenant A only"},
}


def _shape(body: dict[str, Any], ident: str) -> tuple[Any, ...]:
    """What a 404 says, with the id it names taken out."""
    return (
        body["status"],
        body["statusKey"],
        body["messageKey"],
        body["message"].replace(ident, "<id>"),
        body["errors"],
    )


async def _grpc_shape(call: Any, ident: str) -> tuple[str, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code().name, (err.details() or "").replace(ident, "<id>")
    return "OK", ""


async def _stream_shape(
    stub: ng.NotificationServiceStub, conversation_id: str, metadata: Any
) -> tuple[str, str]:
    """How a stream of one conversation ends, with the id it names taken out."""
    call = stub.StreamNotifications(
        n.StreamNotificationsRequest(conversation_ids=[conversation_id]), metadata=metadata
    )
    try:
        async with asyncio.timeout(5):
            await call.read()
    except grpc.aio.AioRpcError as err:
        return err.code().name, (err.details() or "").replace(conversation_id, "<id>")
    finally:
        call.cancel()
    return "OK", ""


async def test_another_tenants_ids_are_not_found_over_rest_and_grpc(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        await hub.store.keys.create_tenant("tenant-b")
        b_key = await hub.store.keys.create_api_key("tenant-b")
        b_headers = {"x-api-id": b_key.api_id, "x-api-key": b_key.secret}
        b_md = tuple(b_headers.items())

        # Tenant A (the default tenant) owns a message, a session and its conversation.
        status, sent = await rest_call(
            hub,
            "POST",
            "/api/v2/message/send",
            {**AUTH_HEADERS, "Idempotency-Key": "same-key"},
            SEND,
        )
        assert status == 202, sent
        message_id = sent["results"][0]["messageId"]
        data = await receive(hub, seed("inbound_wrapper.json"))
        [session_id] = data["sessionIds"]
        status, session = await rest_call(
            hub, "GET", f"/api/v1/sessions/{session_id}", AUTH_HEADERS
        )
        assert status == 200, session
        conversation_id = session["data"]["session"]["conversationId"]
        status, _ = await rest_call(
            hub, "GET", f"/api/v1/conversations/{conversation_id}", AUTH_HEADERS
        )
        assert status == 200

        template = {
            "code": "TENANCY",
            "lang": "en_US",
            "body": "only for A",
            "approved": [{"channelId": "sandbox", "status": "APPROVED"}],
        }
        status, made = await rest_call(
            hub, "POST", "/api/v1/config/tmpl/hsm", AUTH_HEADERS, template
        )
        assert status == 201, made
        template_id = made["data"]["template"]["id"]

        checked = 0
        for method, path, body in (
            ("DELETE", "/api/v1/config/tmpl/hsm/{}", None),
            ("PUT", "/api/v1/config/tmpl/hsm/{}", {**template, "body": "taken over"}),
        ):
            missing = str(uuid.uuid4())
            status, theirs = await rest_call(hub, method, path.format(template_id), b_headers, body)
            missing_status, none = await rest_call(
                hub, method, path.format(missing), b_headers, body
            )
            assert (status, missing_status) == (404, 404), (path, theirs, none)
            assert _shape(theirs, template_id) == _shape(none, missing), path
            checked += 1
        status, listed_b = await rest_call(hub, "GET", "/api/v1/config/tmpl/hsm", b_headers)
        assert status == 200 and listed_b["results"] == [], listed_b

        for path, ident in (
            ("/api/v1/messages/{}", message_id),
            ("/api/v1/sessions/{}", session_id),
            ("/api/v1/conversations/{}", conversation_id),
            # A stream of A's conversation fails before it starts, as for no conversation.
            ("/api/v1/notifications/stream?conversationIds={}", conversation_id),
        ):
            missing = str(uuid.uuid4())
            status, theirs = await rest_call(hub, "GET", path.format(ident), b_headers)
            missing_status, none = await rest_call(hub, "GET", path.format(missing), b_headers)
            assert (status, missing_status) == (404, 404), (path, theirs, none)
            assert _shape(theirs, ident) == _shape(none, missing), path
            checked += 1

        async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
            messaging = mg.MessagingServiceStub(channel)
            sessions = sg.SessionServiceStub(channel)
            for make, ident in (
                (
                    lambda i: messaging.GetMessage(
                        m.GetMessageRequest(message_id=i), metadata=b_md
                    ),
                    message_id,
                ),
                (
                    lambda i: sessions.GetSession(s.GetSessionRequest(session_id=i), metadata=b_md),
                    session_id,
                ),
                (
                    lambda i: sessions.GetConversation(
                        s.GetConversationRequest(conversation_id=i), metadata=b_md
                    ),
                    conversation_id,
                ),
            ):
                missing = str(uuid.uuid4())
                theirs_g = await _grpc_shape(make(ident), ident)
                none_g = await _grpc_shape(make(missing), missing)
                assert theirs_g[0] == "NOT_FOUND" and theirs_g == none_g, (theirs_g, none_g)
                checked += 1

            notifications = ng.NotificationServiceStub(channel)
            missing = str(uuid.uuid4())
            theirs_s = await _stream_shape(notifications, conversation_id, b_md)
            none_s = await _stream_shape(notifications, missing, b_md)
            assert theirs_s[0] == "NOT_FOUND" and theirs_s == none_s, (theirs_s, none_s)
            checked += 1

            # B's list and B's unfiltered stream see nothing of A's.
            listed = await messaging.ListMessages(
                m.ListMessagesRequest(page_size=100), metadata=b_md
            )
            assert message_id not in {x.id for x in listed.results}
            stream = notifications.StreamNotifications(
                n.StreamNotificationsRequest(), metadata=b_md
            )
            first = await stream.read()
            assert first.WhichOneof("item") == "heartbeat"
            await receive(hub, wrapper(text_message("wamid.tenancy-2", "more for A")))
            leaked: list[Any] = []
            try:
                async with asyncio.timeout(1.5):
                    while (item := await stream.read()) is not grpc.aio.EOF:
                        if item.WhichOneof("item") == "notification":
                            leaked.append(item)
            except TimeoutError:
                pass
            finally:
                stream.cancel()
            assert leaked == []
            checked += 1

        # The same idempotency key under tenant B is B's own: a new message, not A's reply.
        body_b = {**SEND, "content": {"type": "text", "text": "tenant B, same key"}}
        status, again = await rest_call(
            hub,
            "POST",
            "/api/v2/message/send",
            {**b_headers, "Idempotency-Key": "same-key"},
            body_b,
        )
        assert status == 202, again
        b_message = again["results"][0]["messageId"]
        assert b_message != message_id
        status, mine = await rest_call(hub, "GET", f"/api/v1/messages/{message_id}", AUTH_HEADERS)
        assert status == 200 and mine["data"]["message"]["id"] == message_id, mine
        status, _ = await rest_call(hub, "GET", f"/api/v1/messages/{b_message}", AUTH_HEADERS)
        assert status == 404
        checked += 1
        print(f"\ncross-tenant checks passed: {checked}")


async def test_a_tenants_webhook_gets_its_own_events_only(db_url: str) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        async with running_hub(db_url) as hub:
            await hub.store.keys.create_tenant("tenant-b")
            b_key = await hub.store.keys.create_api_key("tenant-b")
            b_headers = {"x-api-id": b_key.api_id, "x-api-key": b_key.secret}
            status, _ = await rest_call(
                hub, "POST", "/api/v1/config/webhook", AUTH_HEADERS, {"url": url}
            )
            assert status == 200
            # B's webhook setting is B's own: it shows none, and clearing it leaves A's.
            status, b_view = await rest_call(
                hub, "POST", "/api/v1/config/webhook", b_headers, {"url": ""}
            )
            assert status == 200 and b_view["data"].get("webhook", "") == ""
            for headers, name in ((b_headers, "B-ONLY"), (AUTH_HEADERS, "A-ONLY")):
                status, _ = await rest_call(
                    hub,
                    "POST",
                    "/api/v1/event/push",
                    headers,
                    {"eventName": name, "id": name, "links": []},
                )
                assert status == 200
            await eventually(lambda: len(received) >= 1)
            await asyncio.sleep(0.5)  # room for a stray delivery of B's event to arrive
    finally:
        await runner.cleanup()
    names = [c["event"].get("message", "") for item in received for c in item["body"]["changes"]]
    print(f"\nA's webhook received {names}")
    assert "A-ONLY" in names and "B-ONLY" not in names
