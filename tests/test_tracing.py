"""One send is one trace: accept, dispatch, provider, receipt and webhook, end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adapters.provider_http import HttpProviderClient
from adapters.sandbox import SandboxAdapter
from cim.v1 import messaging_service_pb2, messaging_service_pb2_grpc
from server.telemetry import tracing
from support.clock import eventually
from support.hub import channel_to, rest_session, running_hub

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.reset()


@dataclass
class Receiver:
    port: int = 0
    hits: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        got.hits.append(dict(request.headers))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    got.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield got
    finally:
        await runner.cleanup()


def _hex(span_id: int) -> str:
    return trace.format_span_id(span_id)


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _parent_of(span: ReadableSpan) -> str:
    assert span.parent is not None, span.name
    return _hex(span.parent.span_id)


def _id(span: ReadableSpan) -> str:
    assert span.context is not None
    return _hex(span.context.span_id)


async def test_a_send_its_dispatch_receipt_and_webhook_are_one_trace(
    db_url: str, spans: InMemorySpanExporter, receiver: Receiver
) -> None:
    sandbox = SandboxAdapter("sandbox-sms", delivery_delay=0.01)
    body = {
        "channel": "sms",
        "from": "CNNECT",
        "to": [{"msisdn": ["+4915112345007"]}],
        "content": {"type": "text", "text": "hi"},
        "notifyUrl": f"http://127.0.0.1:{receiver.port}/hook",
        "requestedReceipts": ["DELIVERED"],
    }
    async with running_hub(db_url, adapters={"sandbox-sms": sandbox}) as hub:
        async with (
            rest_session() as http,
            http.post(
                f"http://127.0.0.1:{hub.http_port}/api/v2/message/send",
                json=body,
                headers={"traceparent": TRACEPARENT},
            ) as resp,
        ):
            envelope = await resp.json()
            assert resp.status == 202, envelope
        await eventually(lambda: len(receiver.hits) == 1)
        await eventually(
            lambda: any(s.name == "webhook deliver" for s in spans.get_finished_spans())
        )
    finished = list(spans.get_finished_spans())

    # The envelope names the caller's trace, and so does every span.
    assert envelope["traceid"] == TRACE_ID
    assert {trace.format_trace_id(s.context.trace_id) for s in finished if s.context} == {TRACE_ID}
    # One REST call is one server span, a child of the caller's span.
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    assert [s.name for s in servers] == ["cim.v1.MessagingService/SendBatch"]
    accept = servers[0]
    assert _parent_of(accept) == CALLER_SPAN
    assert accept.parent is not None and accept.parent.is_remote

    # The attempt is processed under the accepting span and linked to it.
    attempt = _one(finished, "process sandbox-sms")
    assert attempt.kind is SpanKind.CONSUMER
    assert _parent_of(attempt) == _id(accept)
    assert [_hex(link.context.span_id) for link in attempt.links] == [_id(accept)]
    assert attempt.attributes is not None
    assert attempt.attributes["cimhub.outcome"] == "SUBMITTED"
    provider = _one(finished, "provider sandbox")
    assert _parent_of(provider) == _id(attempt)

    receipt = _one(finished, "receipt sandbox-sms")
    assert receipt.kind is SpanKind.CONSUMER
    assert _parent_of(receipt) == _id(accept)
    assert [_hex(link.context.span_id) for link in receipt.links] == [_id(accept)]
    assert receipt.attributes is not None
    assert receipt.attributes["cimhub.receipt.status"] == "DELIVERED"

    webhook = _one(finished, "webhook deliver")
    assert webhook.kind is SpanKind.PRODUCER
    assert _parent_of(webhook) == _id(accept)
    post = _one(finished, "POST")
    assert post.kind is SpanKind.CLIENT
    assert _parent_of(post) == _id(webhook)

    # The receiver is told which trace and which request span its call belongs to.
    version, trace_id, parent_id, _flags = receiver.hits[0]["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", TRACE_ID, _id(post))


async def test_a_call_without_traceparent_starts_a_trace_the_envelope_names(
    db_url: str, spans: InMemorySpanExporter
) -> None:
    async with (
        running_hub(db_url) as hub,
        rest_session() as http,
        http.get(f"http://127.0.0.1:{hub.http_port}/api/v1/messages") as resp,
    ):
        assert resp.status == 200
        envelope = await resp.json()
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.parent is None
    assert server.context is not None
    assert envelope["traceid"] == trace.format_trace_id(server.context.trace_id)


async def test_grpc_metadata_traceparent_is_continued(
    db_url: str, spans: InMemorySpanExporter
) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
        await stub.ListMessages(
            messaging_service_pb2.ListMessagesRequest(), metadata=(("traceparent", TRACEPARENT),)
        )
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.name == "cim.v1.MessagingService/ListMessages"
    assert server.context is not None
    assert trace.format_trace_id(server.context.trace_id) == TRACE_ID
    assert _parent_of(server) == CALLER_SPAN


async def test_provider_requests_carry_the_attempts_traceparent(
    spans: InMemorySpanExporter, receiver: Receiver
) -> None:
    client = HttpProviderClient(f"http://127.0.0.1:{receiver.port}")
    try:
        with tracing.tracer().start_as_current_span("attempt") as attempt:
            status, _body, _headers = await client.request("POST", "/hook", json={})
    finally:
        await client.close()
    assert status == 204
    _version, trace_id, parent_id, flags = receiver.hits[0]["traceparent"].split("-")
    assert trace_id == trace.format_trace_id(attempt.get_span_context().trace_id)
    post = _one(list(spans.get_finished_spans()), "POST")
    assert parent_id == _id(post)
    assert int(flags, 16) & 1  # sampled


async def test_spans_are_exported_over_otlp_http_when_the_endpoint_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    posts: list[tuple[str, int]] = []

    async def traces(request: web.Request) -> web.Response:
        posts.append((request.path, len(await request.read())))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    try:
        assert not tracing.exporting({})
        provider = tracing.configure()
        with tracing.tracer().start_as_current_span("exported"):
            pass
        # The exporter posts synchronously; the sink answers on this loop.
        assert await asyncio.to_thread(provider.force_flush, 10_000)
        await asyncio.to_thread(provider.shutdown)
    finally:
        tracing.reset()
        await runner.cleanup()
    assert posts and posts[0][0] == "/v1/traces" and posts[0][1] > 0


def test_nothing_is_recorded_by_default() -> None:
    tracing.configure({})
    with tracing.tracer().start_as_current_span("quiet") as span:
        # Ids are still made up, for envelopes, stored messages and logs.
        assert span.get_span_context().is_valid
        assert not span.is_recording()
