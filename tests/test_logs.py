"""Log lines: one JSON object per event of note, and never a secret or a message body."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from adapters.base import AdapterContext
from adapters.twilio import TwilioSmsAdapter
from cim.v1 import messaging_service_pb2, messaging_service_pb2_grpc
from fakes.twilio import FakeTwilio
from server.api.context import DEFAULT_TENANT
from server.domain.models import Channel
from server.telemetry import logs
from support.clock import eventually
from support.hub import TEST_API_ID, TEST_API_KEY, authed_channel, rest_session, running_hub
from support.net import loopback_http

ACCOUNT_SID = "AC" + "7" * 32
TWILIO_TOKEN = "tw-cred-4e1b77c2d9"
WRONG_TWILIO_TOKEN = "tw-wrong-cred-93ad0f1e"
BODY_TEXT = "body-text-do-not-log-5521"
WRONG_KEY = "wrong-api-key-6c0ffee9"
BAD_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsZWFrIn0.jwt-secret-sig-31415"
HOOK_TOKEN = "hook-query-token-8d2e"
CALLBACK_DATA = "callback-data-secret-7a7a"


@pytest.fixture
def captured() -> Iterator[dict[str, io.StringIO]]:
    """Everything logged while the test runs, in both formats."""
    root = logging.getLogger()
    outputs = {kind: io.StringIO() for kind in logs.FORMATS}
    handlers = []
    for kind, stream in outputs.items():
        handler = logging.StreamHandler(stream)
        logs.install(handler, kind)
        root.addHandler(handler)
        handlers.append(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield outputs
    finally:
        root.setLevel(level)
        for handler in handlers:
            root.removeHandler(handler)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[int, list[int]]]:
    hits: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        hits.append(1)
        # The first try fails, so a retry and a failure are logged too.
        return web.Response(status=500 if len(hits) == 1 else 204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    # The receiver is not the hub: its own access log is not under test.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1], hits  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def _twilio(base_url: str, public_url: str) -> TwilioSmsAdapter:
    channel = Channel(
        "sandbox-sms",
        "SMS",
        "twilio",
        lane="+15005550006",
        settings={
            "account_sid": ACCOUNT_SID,
            "auth_token_env": "LOG_TEST_TWILIO_TOKEN",
            "base_url": base_url,
            "timeout_seconds": "2",
        },
    )
    ctx = AdapterContext(
        public_url=public_url,
        fetcher=loopback_http(),
        env={"LOG_TEST_TWILIO_TOKEN": WRONG_TWILIO_TOKEN},
    )
    return TwilioSmsAdapter(channel, ctx)


async def test_no_secret_or_body_reaches_any_log_line(
    db_url: str, captured: dict[str, io.StringIO], receiver: tuple[int, list[int]]
) -> None:
    port, hits = receiver
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TWILIO_TOKEN) as twilio:
        # The provider refuses the adapter's credential: a failed attempt.
        adapters = {"sandbox-sms": _twilio(twilio.url, "http://127.0.0.1:1")}
        async with running_hub(db_url, adapters=adapters, webhook_retry_base_ms=20) as hub:
            url = f"http://127.0.0.1:{hub.http_port}"
            body = {
                "channel": "sms",
                "from": "+15005550006",
                "to": [{"msisdn": ["+4915112345009"]}],
                "content": {"type": "text", "text": BODY_TEXT},
                "notifyUrl": f"http://127.0.0.1:{port}/hook?token={HOOK_TOKEN}",
                "requestedReceipts": ["FAILED"],
                "callbackData": CALLBACK_DATA,
            }
            async with rest_session() as http:
                async with http.post(f"{url}/api/v2/message/send", json=body) as resp:
                    assert resp.status == 202, await resp.text()
                # Authentication failures, by API key and by token.
                wrong_key = {"x-api-id": TEST_API_ID, "x-api-key": WRONG_KEY}
                async with http.get(f"{url}/api/v1/messages", headers=wrong_key) as resp:
                    assert resp.status == 401
                bearer = {"Authorization": f"Bearer {BAD_JWT}"}
            async with (
                rest_session() as bare,
                bare.get(f"{url}/api/v1/messages", headers=bearer) as resp,
            ):
                assert resp.status == 401
            channel = authed_channel(f"127.0.0.1:{hub.grpc_port}")
            try:
                stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
                with pytest.raises(Exception):  # noqa: B017 - any refusal will do
                    await stub.ListMessages(
                        messaging_service_pb2.ListMessagesRequest(),
                        metadata=(("x-api-id", TEST_API_ID), ("x-api-key", WRONG_KEY)),
                    )
            finally:
                await channel.close()
            await eventually(lambda: len(hits) == 2)
            await eventually(lambda: captured["json"].getvalue().count('"webhook.delivery"') == 2)
            webhook_secret = await hub.store.webhooks.webhook_secret(DEFAULT_TENANT)

    secrets = {
        "api key": TEST_API_KEY,
        "wrong api key": WRONG_KEY,
        "jwt": BAD_JWT,
        "jwt signature": "jwt-secret-sig-31415",
        "webhook secret": webhook_secret,
        "provider credential": TWILIO_TOKEN,
        "wrong provider credential": WRONG_TWILIO_TOKEN,
        "message body": BODY_TEXT,
        "receiver token": HOOK_TOKEN,
        "callback data": CALLBACK_DATA,
    }
    for kind, stream in captured.items():
        text = stream.getvalue()
        assert text, f"nothing was logged as {kind}"
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in the {kind} log"

    lines = [json.loads(line) for line in captured["json"].getvalue().splitlines() if line]
    by_event: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        for name in ("trace_id", "message_id", "tenant", "channel"):
            assert name in line, line
        by_event.setdefault(str(line["event"]), []).append(line)
    done = by_event["request.done"]
    assert {d["code"] for d in done} >= {"OK", "UNAUTHENTICATED"}
    assert {d["transport"] for d in done} == {"rest", "grpc"}
    send = next(d for d in done if d["method"] == "/cim.v1.MessagingService/SendBatch")
    assert send["tenant"] == DEFAULT_TENANT and len(str(send["trace_id"])) == 32
    (attempt,) = by_event["dispatch.attempt"]
    assert attempt["outcome"] == "FAILED" and attempt["level"] == "WARNING"
    assert attempt["channel"] == "sandbox-sms" and attempt["tenant"] == DEFAULT_TENANT
    # The attempt and both webhook deliveries belong to the accepting request's trace.
    deliveries = by_event["webhook.delivery"]
    assert [d["outcome"] for d in deliveries] == ["RETRY", "DELIVERED"]
    assert {attempt["trace_id"], *(d["trace_id"] for d in deliveries)} == {send["trace_id"]}
    assert {d["message_id"] for d in deliveries} == {attempt["message_id"]}


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.formatter("xml")
