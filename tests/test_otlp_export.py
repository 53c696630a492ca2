"""The hub's OTLP encoder writes what the SDK's encoder writes, and a collector can read it."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from server.telemetry import tracing
from server.telemetry.otlp import Encoder

REMOTE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _spans() -> list[ReadableSpan]:
    """Spans of every shape the hub makes, and a few it does not."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "cimhub", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ours = provider.get_tracer("cimhub")
    other = provider.get_tracer("other", "1.2.3", schema_url="https://example.invalid/s")
    caller = tracing.extract({"traceparent": REMOTE, "tracestate": "vendor=a,other=b"})
    with ours.start_as_current_span(
        "cim.v1.MessagingService/SendMessage",
        context=caller,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.method": "SendMessage"},
    ) as server:
        server.set_attribute("rpc.grpc.status_code", 0)
    accepted = trace.set_span_in_context(server)
    attempt = ours.start_span(
        "process sandbox-sms",
        context=accepted,
        kind=SpanKind.CONSUMER,
        links=[Link(server.get_span_context()), Link(caller_context(caller), {"why": "caller"})],
        attributes={
            "messaging.message.id": "0190a2b4-7c1d-7def-8000-000000000001",
            "cimhub.attempt": 2,
            "negative": -5,
            "big": 2**40,
            "ratio": 0.25,
            "flag": False,
            "empty": "",
            "names": ("a", "b"),
            "numbers": [1, 2, 3],
            "unicode": "héllo ✓",
            # The same key and value as the link's and the event's below: each
            # is written under its own field.
            "why": "caller",
        },
    )
    attempt.add_event("retry", {"after_ms": 250, "why": "caller"})
    attempt.add_event("bare")
    attempt.set_status(Status(StatusCode.ERROR, "UNAVAILABLE"))
    attempt.end()
    with other.start_as_current_span("POST", kind=SpanKind.CLIENT) as post:
        post.set_status(Status(StatusCode.OK))
    with ours.start_as_current_span("internal"):
        pass
    return list(exporter.get_finished_spans())


def caller_context(ctx: object) -> trace.SpanContext:
    return trace.get_current_span(ctx).get_span_context()  # type: ignore[arg-type]


def test_the_encoder_writes_the_request_the_sdk_encoder_writes() -> None:
    spans = _spans()
    assert len(spans) == 4
    ours = ExportTraceServiceRequest.FromString(Encoder().request(spans))
    assert ours == encode_spans(spans)


def test_a_second_batch_encodes_the_same_after_caching() -> None:
    spans = _spans()
    encoder = Encoder()
    first = encoder.request(spans)
    assert encoder.request(spans) == first
    assert ExportTraceServiceRequest.FromString(encoder.request(spans[1:2])) == encode_spans(
        spans[1:2]
    )


async def test_exported_spans_reach_a_collector_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        got.append(ExportTraceServiceRequest.FromString(await request.read()))
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
        provider = tracing.configure()
        caller = tracing.extract({"traceparent": REMOTE})
        with tracing.tracer().start_as_current_span(
            "exported", context=caller, attributes={"cimhub.attempt": 1}
        ):
            pass
        assert await asyncio.to_thread(provider.force_flush, 10_000)
        await asyncio.to_thread(provider.shutdown)
    finally:
        tracing.reset()
        await runner.cleanup()
    (request,) = got
    (resource_spans,) = request.resource_spans
    names = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert names["service.name"] == "cimhub"
    (span,) = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.name == "exported"
    assert span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id.hex() == "b7ad6b7169203331"
    assert [(kv.key, kv.value.int_value) for kv in span.attributes] == [("cimhub.attempt", 1)]
    assert span.end_time_unix_nano >= span.start_time_unix_nano > 0


def test_the_batch_sizes_are_left_to_otel_bsp_variables_when_set() -> None:
    assert tracing._batching({}) == (32768, 2048)
    assert tracing._batching({"OTEL_BSP_MAX_QUEUE_SIZE": "100"}) == (None, None)
    assert tracing._batching({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10"}) == (None, None)
