"""W3C trace context in and out, and the tracer every part of the hub starts spans with.

Trace ids exist even when nothing is exported: the default tracer samples
nothing but still makes up ids, so a request without a `traceparent` gets a
trace id for its envelope, its messages and its log lines. Setting the
standard OTEL_EXPORTER_OTLP_* variables swaps in a tracer that records and
exports over OTLP/HTTP, sampled as OTEL_TRACES_SAMPLER says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SCOPE = "cimhub"
HEADERS = ("traceparent", "tracestate")
_PROPAGATOR = TraceContextTextMapPropagator()


class _State:
    provider: TracerProvider
    tracer: trace.Tracer


_STATE = _State()


def use(provider: TracerProvider) -> None:
    """Start every span from here on with `provider` (tests hand in an in-memory one)."""
    _STATE.provider = provider
    _STATE.tracer = provider.get_tracer(SCOPE)


def tracer() -> trace.Tracer:
    return _STATE.tracer


def exporting(env: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for spans to be exported."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure(env: Mapping[str, str] | None = None) -> TracerProvider:
    """The process's tracer, from the OTEL_* environment; returns it for shutdown."""
    env = os.environ if env is None else env
    if not exporting(env):
        use(_silent())
        return _STATE.provider
    # Imported only when asked for: it pulls in protobuf encoders and requests.
    from server.telemetry.otlp import SpanExporter

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "cimhub"})
    # Sampler (OTEL_TRACES_SAMPLER), exporter endpoint, headers and timeouts
    # all come from the standard variables, read by the SDK itself.
    provider = TracerProvider(resource=resource)
    queue, batch = _batching(env)
    provider.add_span_processor(
        BatchSpanProcessor(SpanExporter(), max_queue_size=queue, max_export_batch_size=batch)
    )
    use(provider)
    return provider


def _batching(env: Mapping[str, str]) -> tuple[int | None, int | None]:
    """The batch processor's sizes, where OTEL_BSP_* leaves them to us.

    The SDK's queue (2048 spans) holds a quarter of a second of a busy hub
    (four spans per message); past it spans are dropped, each with a log line.
    Bigger batches mean fewer wake-ups of the export thread, which shares the
    interpreter with the requests.
    """
    # Either variable set leaves both to the SDK (None), which checks that they fit.
    if env.get("OTEL_BSP_MAX_QUEUE_SIZE") or env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        return None, None
    return 32768, 2048


def reset() -> None:
    """Back to the default: ids made up, nothing recorded."""
    use(_silent())


def _silent() -> TracerProvider:
    return TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)


use(_silent())


# -- propagation -------------------------------------------------------------------------


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    """The context a `traceparent` (and `tracestate`) in carrier names; empty if none."""
    return _PROPAGATOR.extract(carrier)


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if key in HEADERS and isinstance(value, str):
            carrier[key] = value
    return extract(carrier)


def inject(carrier: dict[str, str], ctx: otel_context.Context | None = None) -> None:
    """Write the current (or given) span's traceparent/tracestate into carrier."""
    _PROPAGATOR.inject(carrier, context=ctx)


def traceparent_of(span: trace.Span) -> str:
    """The span's context as one `traceparent` string, to store with what it produced."""
    carrier: dict[str, str] = {}
    inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def current_traceparent() -> str:
    """The current span's context as a `traceparent`, "" outside any trace."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent", "")


def stored_context(traceparent: str) -> otel_context.Context:
    """The context a stored `traceparent` names (empty when none was stored)."""
    return extract({"traceparent": traceparent}) if traceparent else otel_context.Context()


def link_to(ctx: otel_context.Context) -> list[trace.Link]:
    span_context = trace.get_current_span(ctx).get_span_context()
    return [trace.Link(span_context)] if span_context.is_valid else []


def trace_id_of(span: trace.Span | None = None) -> str:
    """32 hex digits of the (current) span's trace, or "" outside any trace."""
    span_context = (span or trace.get_current_span()).get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else ""


def trace_id_in(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


# -- the trace id a local call ran under --------------------------------------------------

# Set by the REST façade around a call it runs in-process: the server's tracing
# interceptor, which runs in the same task, reports the trace id it used.
_SEEN: ContextVar[list[str] | None] = ContextVar("cimhub_seen_trace", default=None)


@contextmanager
def watch_trace_id() -> Iterator[list[str]]:
    seen: list[str] = []
    token = _SEEN.set(seen)
    try:
        yield seen
    finally:
        _SEEN.reset(token)


def report_trace_id(trace_id: str) -> None:
    seen = _SEEN.get()
    if seen is not None and not seen:
        seen.append(trace_id)
