"""deploy/prometheus against the real tools: promtool, and a Prometheus server scraping a hub."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from support import free_port, unavailable
from support.hub import channel_to, running_hub
from support.metrics import scrape, scrape_text, value

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not found (Debian's prometheus package; make system-deps installs it)")
    return path


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_the_scrape_config_and_alert_rules_pass_promtool() -> None:
    config = _promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    names = {
        line.split("alert:", 1)[1].strip()
        for line in (DEPLOY / "alerts.yml").read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    assert {
        "CimhubOutboxBacklogAging",
        "CimhubProviderErrorRatioHigh",
        "CimhubWebhookDeadLettersGrowing",
    } <= names


def _send(phone: str = "+447700900123") -> m.SendMessageRequest:
    return m.SendMessageRequest(
        channel_id="sandbox",
        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
        to=o.OutboundContact(phone=phone),
        text=o.OutboundText(body="scraped"),
    )


async def _wait_delivered(stub: mg.MessagingServiceStub, ids: list[str]) -> None:
    async with asyncio.timeout(15):
        for message_id in ids:
            while True:
                got = await stub.GetMessage(m.GetMessageRequest(message_id=message_id))
                if got.message.status == d.DELIVERY_STATUS_DELIVERED:
                    break
                await asyncio.sleep(0.02)


async def test_a_real_scrape_passes_promtool_check_metrics(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        await _wait_delivered(stub, [(await stub.SendMessage(_send())).message_id])
        body = await scrape_text(hub.http_port)
    assert "cimhub_accept_to_delivered_seconds_bucket" in body
    checked = _promtool("check", "metrics", stdin=body)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # promtool names what it dislikes on stdout or stderr even when it passes.
    assert not (checked.stdout + checked.stderr).strip(), checked.stdout + checked.stderr


@asynccontextmanager
async def prometheus_scraping(tmp: Path, target: str) -> AsyncIterator[str]:
    """A real Prometheus server on loopback scraping `target` every second; yields its URL."""
    binary = _tool("prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: cimhub\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    log = (tmp / "prometheus.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                assert proc.returncode is None, (tmp / "prometheus.log").read_text()
                try:
                    async with http.get(f"{url}/-/ready") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def _query(http: aiohttp.ClientSession, url: str, expr: str) -> float | None:
    async with http.get(f"{url}/api/v1/query", params={"query": expr}) as resp:
        assert resp.status == 200, await resp.text()
        doc: dict[str, Any] = await resp.json()
    assert doc["status"] == "success", doc
    result = doc["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def test_prometheus_sees_the_sends_through_its_query_api(db_url: str, tmp_path: Path) -> None:
    sends = 7
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        target = f"127.0.0.1:{hub.http_port}"
        async with (
            prometheus_scraping(tmp_path, target) as prom,
            aiohttp.ClientSession() as http,
        ):
            # One scrape of the idle hub first, so the counters start from a sample.
            async with asyncio.timeout(30):
                while True:
                    if await _query(http, prom, 'up{job="cimhub"}') == 1:
                        break
                    await asyncio.sleep(0.2)
            exprs = {
                "accepted": "sum(cimhub_messages_accepted_total) or vector(0)",
                "attempts": 'sum(cimhub_dispatch_attempts_total{outcome="accepted"}) or vector(0)',
                "provider": "sum(cimhub_provider_request_duration_seconds_count) or vector(0)",
                "delivered": "sum(cimhub_accept_to_delivered_seconds_count) or vector(0)",
            }
            before = {k: await _query(http, prom, e) for k, e in exprs.items()}
            stub = mg.MessagingServiceStub(channel)
            ids = [(await stub.SendMessage(_send())).message_id for _ in range(sends)]
            await _wait_delivered(stub, ids)
            # What the hub itself says now; Prometheus must come to the same.
            own = await scrape(hub.http_port)
            assert value(own, "cimhub_messages_accepted_total") == sends
            expected = {k: (before[k] or 0) + sends for k in exprs}
            seen: dict[str, float | None] = {}
            async with asyncio.timeout(30):
                while True:
                    seen = {k: await _query(http, prom, e) for k, e in exprs.items()}
                    if all((seen[k] or 0) >= expected[k] for k in exprs):
                        break
                    await asyncio.sleep(0.25)
    assert before == {"accepted": 0, "attempts": 0, "provider": 0, "delivered": 0}
    assert seen == expected
