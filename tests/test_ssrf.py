"""Outbound HTTP to tenant-supplied URLs reaches global addresses only, and never follows redirects.

"Nothing fetched" is proven by a loopback listener that counts connections:
every refused URL points at its port.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import select

from server.net.addresses import AddressPolicy
from server.net.http import OutboundError, OutboundHttp
from server.storage.schema import webhooks
from support.hub import rest_session, running_hub


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


class MapResolver(AbstractResolver):
    """Resolves names from a table, as DNS would, so any name can point anywhere."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        return None


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
            await hub.store.enqueue_webhook(
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
