"""Outbound HTTP to tenant-supplied URLs reaches global addresses only, and never follows redirects.

"Nothing fetched" is proven by a loopback listener that counts connections:
every refused URL points at its port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import web
from sqlalchemy import select

from adapters.base import PermanentProviderError
from adapters.media import vet_media_urls
from adapters.rbm_messages import agent_message
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from fakes.smtp import FakeSmtpServer
from fakes.whatsapp import FakeWhatsApp
from server.config import DEFAULT_CHANNELS
from server.domain.content import parse_content
from server.domain.models import Channel
from server.gateway.jsonmap import parse
from server.net.addresses import AddressPolicy
from server.net.http import OutboundError, OutboundHttp, RefusedUrl
from server.storage.tx import now_ms
from server.storage.webhook_schema import webhooks
from support.hub import authed_channel, rest_session, running_hub
from support.listener import MapResolver


@dataclass
class Listener:
    port: int
    connections: int = 0
    paths: list[str] = field(default_factory=list)


@asynccontextmanager
async def counting_listener() -> AsyncIterator[Listener]:
    """Counts TCP connections on 127.0.0.1 and ::1, on one port."""
    sock4 = socket.socket(socket.AF_INET)
    sock4.bind(("127.0.0.1", 0))
    port = sock4.getsockname()[1]
    listener = Listener(port)

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.connections += 1
        writer.close()

    servers = [await asyncio.start_server(on_connect, sock=sock4)]
    with suppress(OSError):  # a host without IPv6 loopback
        servers.append(await asyncio.start_server(on_connect, "::1", port))
    try:
        yield listener
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


REFUSED_HOSTS = (
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "169.254.169.254",
    "10.0.0.1",
    "100.64.0.1",
    "[fd00::1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::1]",
    "localhost",
)


async def test_internal_addresses_in_every_spelling_are_refused_unfetched() -> None:
    http = OutboundHttp()
    try:
        async with counting_listener() as listener:
            reasons: dict[str, str] = {}
            for host in REFUSED_HOSTS:
                url = f"http://{host}:{listener.port}/hook"
                with pytest.raises(OutboundError) as posted:
                    await http.post(url, b"{}", {})
                with pytest.raises(OutboundError) as fetched:
                    await http.fetch(url, 1024)
                assert "refused" in posted.value.reason, (host, posted.value.reason)
                assert "refused" in fetched.value.reason, (host, fetched.value.reason)
                reasons[host] = posted.value.reason
            print(f"\nrefused {len(reasons)} URLs; connections made: {listener.connections}")
            for host, reason in reasons.items():
                print(f"  {host}: {reason}")
            assert listener.connections == 0
    finally:
        await http.close()


async def test_a_name_with_any_internal_address_is_refused() -> None:
    resolver = MapResolver({"mixed.example.com": ["93.184.216.34", "127.0.0.1"]})
    http = OutboundHttp(resolver=resolver)
    try:
        async with counting_listener() as listener:
            with pytest.raises(OutboundError) as refused:
                await http.post(f"http://mixed.example.com:{listener.port}/", b"{}", {})
            assert "refused loopback address 127.0.0.1" in refused.value.reason
            assert listener.connections == 0
    finally:
        await http.close()


async def test_a_name_resolving_inside_is_a_refusal_not_a_network_error() -> None:
    # The connector fails such a name as a connection error; retrying cannot help.
    http = OutboundHttp(resolver=MapResolver({"media.example.com": ["10.0.0.7"]}))
    try:
        async with counting_listener() as listener:
            with pytest.raises(RefusedUrl) as refused:
                await http.fetch(f"http://media.example.com:{listener.port}/a.png", 1024)
            print(f"\nrefused as {type(refused.value).__name__}: {refused.value.reason}")
            assert "refused private address 10.0.0.7" in refused.value.reason
            assert listener.connections == 0
    finally:
        await http.close()


async def test_a_redirect_is_an_answer_and_never_followed() -> None:
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        target = request.query.get("to", "")
        return web.Response(status=302, headers={"Location": target})

    async def followed(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="should never be reached")

    app = web.Application()
    app.router.add_route("*", "/hook", redirect)
    app.router.add_route("*", "/followed", followed)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    # hooks.example.com plays a public host; the allow-list lets only this test reach it.
    http = OutboundHttp(
        policy=AddressPolicy.of(["127.0.0.1/32"]),
        resolver=MapResolver({"hooks.example.com": ["127.0.0.1"]}),
    )
    try:
        for target in (
            "http://169.254.169.254/latest/meta-data/",
            f"http://hooks.example.com:{port}/followed",
        ):
            url = f"http://hooks.example.com:{port}/hook?to={target}"
            assert await http.post(url, b"{}", {}) == 302
            with pytest.raises(OutboundError, match="HTTP 302"):
                await http.fetch(url, 1024)
        assert hits == ["/hook"] * 4
    finally:
        await http.close()
        await runner.cleanup()


async def test_production_requires_https() -> None:
    http = OutboundHttp(policy=AddressPolicy.of(https_only=True))
    with pytest.raises(OutboundError, match="scheme must be https"):
        await http.post("http://hooks.example.com/", b"{}", {})
    with pytest.raises(OutboundError, match="scheme must be"):
        await OutboundHttp().fetch("file:///etc/passwd", 10)


async def test_a_refused_webhook_records_why(db_url: str) -> None:
    async with counting_listener() as listener:
        async with running_hub(db_url, outbound_allow=(), webhook_retry_base_ms=50) as hub:
            await hub.store.webhooks.enqueue_webhook(
                "default", "k1", f"http://127.1:{listener.port}/hook", {"n": 1}
            )
            error = ""
            for _ in range(100):
                async with hub.store.engine.connect() as conn:
                    row = (await conn.execute(select(webhooks.c.last_error))).first()
                error = row.last_error if row is not None else ""
                if error:
                    break
                await asyncio.sleep(0.05)
        print(f"\nrecorded webhook failure: {error}")
        assert "refused loopback address 127.0.0.1" in error
        assert listener.connections == 0


async def test_internal_callback_urls_are_refused_at_submit_time(db_url: str) -> None:
    async with running_hub(db_url, outbound_allow=()) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        send = {
            "channel": "sms",
            "from": "sandbox-sms",
            "to": [{"msisdn": ["+447911100001"]}],
            "content": {"type": "text", "text": "hi"},
            "notifyUrl": "http://169.254.169.254/latest/meta-data/",
        }
        async with rest_session() as http:
            async with http.post(f"{base}/api/v2/message/send", json=send) as resp:
                body = await resp.json()
                assert resp.status == 400, body
                assert body["errors"][0]["field"] == "notifyUrl"
                assert "169.254.169.254" in body["errors"][0]["description"]
            hook = {"url": "http://[::ffff:10.0.0.1]/hook"}
            async with http.post(f"{base}/api/v1/config/webhook", json=hook) as resp:
                body = await resp.json()
                assert resp.status == 400, body
                assert body["errors"][0]["field"] == "url"
            public = {**send, "notifyUrl": "https://hooks.example.com/receipts"}
            async with http.post(f"{base}/api/v2/message/send", json=public) as resp:
                assert resp.status == 202, await resp.json()


# -- media URLs: a refusal fails the message at once -------------------------

SENDER = "offers@brand.example.org"
WA_SENDER = "wa-app"
WA_TOKEN_VAR = "CIMHUB_TEST_WA_TOKEN"


def smtp_channel(smtp: FakeSmtpServer) -> Channel:
    # The relay is the channel's own configured host, not a tenant URL: the
    # guard does not stand between the hub and it.
    return Channel(
        "email-smtp",
        "EMAIL",
        "smtp",
        lane=SENDER,
        settings={"host": smtp.host, "port": smtp.port, "security": "none"},
    )


def whatsapp_channel(fake: FakeWhatsApp) -> Channel:
    return Channel(
        "wa-cloud",
        "WHATSAPP",
        "whatsapp",
        lane=WA_SENDER,
        settings={
            "phone_number_id": fake.phone_number_id,
            "access_token_env": WA_TOKEN_VAR,
            "app_secret_env": WA_TOKEN_VAR,
            "verify_token_env": WA_TOKEN_VAR,
            "base_url": fake.url,
        },
    )


# Accepted while the operator allowed these addresses; refused once the hub
# restarts without them.
WIDE_ALLOW = ("127.0.0.0/8", "::1/128", "169.254.0.0/16")
LATER_MS = 2 * 3600 * 1000


async def _accepted_then_refused(
    db_url: str, channels: tuple[Channel, ...], body: dict[str, Any]
) -> dict[str, Any]:
    """Accepts body, scheduled for an hour ahead, on a hub that allows the media's
    address; then dispatches it on a hub that no longer does, with its clock past
    the send time. Returns the message, through the API, once it has failed."""
    scheduled = {**body, "sendAt": int(time.time()) + 3600}
    async with (
        running_hub(db_url, channels=channels, outbound_allow=WIDE_ALLOW) as hub,
        rest_session() as http,
        http.post(f"http://127.0.0.1:{hub.http_port}/api/v2/message/send", json=scheduled) as resp,
    ):
        reply = await resp.json()
        assert resp.status == 202, reply
    message_id = reply["results"][0]["messageId"]
    async with running_hub(
        db_url,
        channels=channels,
        outbound_allow=(),
        retry_base_ms=20,
        clock=lambda: now_ms() + LATER_MS,
    ) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        async with rest_session() as http:
            async with asyncio.timeout(10):
                while True:
                    async with http.get(f"{base}/api/v1/messages/{message_id}") as resp:
                        got = await resp.json()
                        assert resp.status == 200, got
                    if got["data"]["message"]["status"] == "FAILED":
                        break
                    await asyncio.sleep(0.05)
            # Long enough for a retry at the test's 20 ms base to have been recorded.
            await asyncio.sleep(0.3)
            async with http.get(f"{base}/api/v1/messages/{message_id}") as resp:
                message = dict((await resp.json())["data"]["message"])
            # A refusal is the message's failure, not the server's.
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200, await resp.text()
    return message


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "refused loopback address 127.0.0.1"),
        ("169.254.169.254", "refused link-local address 169.254.169.254"),
        ("localhost", "refused loopback"),
    ],
)
async def test_a_refused_attachment_url_fails_the_email_at_once(
    db_url: str, host: str, reason: str
) -> None:
    smtp = await FakeSmtpServer().start()
    try:
        async with counting_listener() as listener:
            channels = (*DEFAULT_CHANNELS, smtp_channel(smtp))
            body = {
                "channel": "email",
                "from": SENDER,
                "to": [{"email": ["john.smith@example.com"]}],
                "content": {
                    "type": "html",
                    "subject": "Invoice",
                    "html": "<p>attached</p>",
                    "attachments": [
                        {
                            "mimeType": "application/pdf",
                            "name": "invoice.pdf",
                            "mediaUrl": f"http://{host}:{listener.port}/invoice.pdf",
                        }
                    ],
                },
            }
            message = await _accepted_then_refused(db_url, channels, body)
        attempts = message.get("attemptLog", [])
        print(
            f"\n{host}: {message['attempts']} attempt(s), codes "
            f"{[a.get('errorCode') for a in attempts]}, reason {message['history'][-1]}"
            f"; connections to the listener: {listener.connections}"
        )
        assert message["attempts"] == 1
        assert [a["errorCode"] for a in attempts] == ["URL_REFUSED"]
        assert reason in attempts[0]["reason"]
        assert reason in json.dumps(message["history"][-1])
        assert listener.connections == 0
        assert smtp.received == []
    finally:
        await smtp.stop()


async def test_a_refused_media_link_fails_a_whatsapp_message_at_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeWhatsApp()
    monkeypatch.setenv(WA_TOKEN_VAR, fake.access_token)
    await fake.start()
    try:
        channels = (*DEFAULT_CHANNELS, whatsapp_channel(fake))
        body = {
            "channel": "whatsapp",
            "from": WA_SENDER,
            "to": [{"msisdn": ["+447911123456"]}],
            "content": {
                "type": "image",
                "mediaContentUrl": "http://169.254.169.254/latest/meta-data/a.png",
            },
        }
        message = await _accepted_then_refused(db_url, channels, body)
        attempts = message.get("attemptLog", [])
        print(
            f"\nwhatsapp: {message['attempts']} attempt(s), codes "
            f"{[a.get('errorCode') for a in attempts]}, reason {message['history'][-1]}; "
            f"requests to the provider: {len(fake.requests)}"
        )
        assert message["attempts"] == 1
        assert [a["errorCode"] for a in attempts] == ["URL_REFUSED"]
        assert "refused link-local address 169.254.169.254" in attempts[0]["reason"]
        # The provider is never asked to fetch what the guard refused.
        assert fake.requests == []
    finally:
        await fake.stop()


def test_media_links_a_provider_fetches_are_vetted_wherever_they_sit() -> None:
    guard = OutboundHttp()

    def carousel(url: str) -> dict[str, Any]:
        cards = [
            {"title": "a", "media": {"url": "https://cdn.example.com/a.png"}},
            {"title": "b", "media": {"url": "https://cdn.example.com/b.png", "thumbnailUrl": url}},
        ]
        return agent_message(parse_content({"type": "carousel", "cards": cards}))

    vet_media_urls(guard, carousel("https://cdn.example.com/b-thumb.png"))
    with pytest.raises(PermanentProviderError) as refused:
        vet_media_urls(guard, carousel("http://169.254.169.254/latest/meta-data/"))
    print(f"\nRBM carousel: {refused.value.code}: {refused.value.reason}")
    assert refused.value.code == "URL_REFUSED"
    assert "refused link-local address 169.254.169.254" in refused.value.reason


# -- media URLs at submit time -------------------------------------------------------


def _batch(channel: str, sender: str, to: dict[str, Any], content: dict[str, Any]) -> Any:
    return {"channel": channel, "from": sender, "to": [to], "content": content}


def _card(media: dict[str, str]) -> dict[str, Any]:
    return {"title": "Card", "media": {"height": "MEDIUM", **media}}


GOOD_MEDIA = "https://cdn.example.com/a.png"
PHONE = {"msisdn": ["+447911123456"]}
# (name, REST path, body with {url} for the media URL, the field the refusal names)
SUBMITTED_MEDIA = [
    (
        "whatsapp media",
        "/api/v2/message/send",
        lambda url: _batch(
            "whatsapp", "sandbox-whatsapp", PHONE, {"type": "image", "mediaContentUrl": url}
        ),
        "content.mediaContentUrl",
    ),
    (
        "email attachment",
        "/api/v2/message/send",
        lambda url: _batch(
            "email",
            "sandbox-email",
            {"email": ["john.smith@example.com"]},
            {
                "type": "html",
                "subject": "Invoice",
                "html": "<p>attached</p>",
                "attachments": [{"mimeType": "application/pdf", "name": "a.pdf", "mediaUrl": url}],
            },
        ),
        "content.attachments[0].mediaUrl",
    ),
    (
        "rcs card media",
        "/api/v2/message/send",
        lambda url: _batch(
            "rcs", "sandbox-rcs", PHONE, {"type": "standalone", "richCard": _card({"url": url})}
        ),
        "content.richCard.media.url",
    ),
    (
        "rcs card thumbnail",
        "/api/v2/message/send",
        lambda url: _batch(
            "rcs",
            "sandbox-rcs",
            PHONE,
            {
                "type": "standalone",
                "richCard": _card({"url": GOOD_MEDIA, "thumbnailUrl": url}),
            },
        ),
        "content.richCard.media.thumbnailUrl",
    ),
    (
        "single image",
        "/api/v1/message/send",
        lambda url: {
            "channelId": "sandbox-whatsapp",
            "type": "image",
            "to": {"phone": "+447911123456"},
            "image": {"link": url},
        },
        "image.link",
    ),
]
REFUSED_MEDIA = [
    ("http://127.0.0.1:{port}/a.png", "refused loopback address 127.0.0.1"),
    ("http://169.254.169.254/latest/meta-data/a.png", "refused link-local address"),
    ("http://[::ffff:127.0.0.1]:{port}/a.png", "refused loopback address 127.0.0.1"),
    ("http://localhost:{port}/a.png", "refused loopback name localhost"),
]


async def test_internal_media_urls_are_refused_when_submitted(db_url: str) -> None:
    refused = 0
    async with (
        counting_listener() as listener,
        running_hub(db_url, outbound_allow=()) as hub,
        rest_session() as http,
        authed_channel(f"127.0.0.1:{hub.grpc_port}") as channel,
    ):
        base = f"http://127.0.0.1:{hub.http_port}"
        stub = mg.MessagingServiceStub(channel)
        for name, path, body_for, field_path in SUBMITTED_MEDIA:
            grpc_call, grpc_cls = (
                (stub.SendMessage, m.SendMessageRequest)
                if path.startswith("/api/v1")
                else (stub.SendBatch, m.SendBatchRequest)
            )
            for template, reason in REFUSED_MEDIA:
                body = body_for(template.format(port=listener.port))
                async with http.post(base + path, json=body) as resp:
                    reply = await resp.json()
                assert resp.status == 400, (name, reply)
                assert [e["field"] for e in reply["errors"]] == [field_path], (name, reply)
                assert reason in reply["errors"][0]["description"], (name, reply)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await grpc_call(parse(body, grpc_cls))
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
                assert field_path in (err.value.details() or ""), (name, err.value.details())
                refused += 2
            # A public address passes: the check is the guard's, not a ban on media.
            # The single send answers 200, the batch 202.
            accepted = 200 if path.startswith("/api/v1") else 202
            async with http.post(base + path, json=body_for(GOOD_MEDIA)) as resp:
                assert resp.status == accepted, (name, await resp.json())
        async with http.get(f"{base}/api/v1/messages?pageSize=500") as resp:
            stored = len((await resp.json())["results"])
        async with http.get(f"{base}/healthz") as resp:
            health = resp.status
    print(
        f"\nmedia URLs refused at submit: {refused} over REST and gRPC in "
        f"{len(SUBMITTED_MEDIA)} fields; stored messages {stored} (the public ones); "
        f"connections to the listener: {listener.connections}"
    )
    assert stored == len(SUBMITTED_MEDIA)
    assert listener.connections == 0
    assert health == 200
