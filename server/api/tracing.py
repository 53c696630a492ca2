"""The outermost interceptor: each call is a span, continuing the caller's trace.

It reads W3C `traceparent`/`tracestate` from the call's metadata, the one
place the hub accepts a caller's trace: the REST façade forwards those
headers, and its unary calls run through this same chain in-process. A call
without them starts a new trace. The call's span is current while the handler
runs, so the messages it accepts store its context; when the call ends one
log line says how it went.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.api.context import CALL_FACTS, CallFacts
from server.api.handlers import WrappingInterceptor, forward, rewrap
from server.telemetry import tracing
from server.telemetry.logs import event

log = logging.getLogger(__name__)

# gRPC codes a server span marks as an error (OpenTelemetry's RPC conventions).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingInterceptor(WrappingInterceptor):
    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return rewrap(
            handler,
            unary=lambda inner: self._unary(method, inner),
            stream=lambda inner: self._stream(method, inner),
            request_streams=True,
        )

    def _unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        named = _Method(method)

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with _Call(named, context) as span_call:
                try:
                    return await inner(request, context)
                except BaseException as exc:
                    span_call.failed(exc, context)
                    raise

        return call

    def _stream(self, method: str, inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        named = _Method(method)

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with _Call(named, context) as span_call:
                try:
                    async for item in forward(inner(request, context)):
                        yield item
                except BaseException as exc:
                    span_call.failed(exc, context)
                    raise

        return call


class _Method:
    """What every span of one method shares, worked out once when the method is wrapped."""

    def __init__(self, method: str) -> None:
        self.path = method
        self.span_name = method.strip("/")
        service, _, name = self.span_name.rpartition("/")
        self.attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class _Call:
    """One call's span, current for its handler, and its closing log line."""

    def __init__(self, method: _Method, context: grpc.aio.ServicerContext) -> None:
        self.named = method
        self.method = method.path
        self.metadata = context.invocation_metadata() or ()
        # LocalChannel's calls are the REST façade's.
        self.transport = "rest" if context.peer() == "local" else "grpc"
        self.code = grpc.StatusCode.OK
        self.facts = CallFacts()

    def __enter__(self) -> _Call:
        self.started = time.perf_counter()
        # The SDK copies the attributes into the span, so one dict serves every call.
        self.span = tracing.tracer().start_span(
            self.named.span_name,
            context=tracing.from_metadata(self.metadata),
            kind=SpanKind.SERVER,
            attributes=self.named.attributes,
        )
        self.trace_id = tracing.trace_id_of(self.span)
        tracing.report_trace_id(self.trace_id)
        self._span_cm = trace.use_span(self.span, end_on_exit=False)
        self._span_cm.__enter__()
        self._facts_token = CALL_FACTS.set(self.facts)
        return self

    def failed(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        self.code = _code_of(exc, context)

    def __exit__(self, *exc: object) -> None:
        # A stream's generator may be closed from another context than the
        # one it started in; the values die with the call's task anyway.
        with contextlib.suppress(ValueError):
            CALL_FACTS.reset(self._facts_token)
        self._span_cm.__exit__(None, None, None)
        self.span.set_attribute("rpc.grpc.status_code", self.code.value[0])
        if self.code in _SERVER_ERRORS:
            self.span.set_status(Status(StatusCode.ERROR, self.code.name))
        self.span.end()
        level = logging.WARNING if self.code in _SERVER_ERRORS else logging.INFO
        if not log.isEnabledFor(level):
            return  # spares building the line's fields on every call
        event(
            log,
            "request.done",
            "%s %s %s",
            self.transport,
            self.method,
            self.code.name,
            level=level,
            trace_id=self.trace_id,
            tenant=self.facts.tenant,
            transport=self.transport,
            method=self.method,
            code=self.code.name,
            duration_ms=round((time.perf_counter() - self.started) * 1000, 3),
            request_id=_request_id(self.metadata),
        )


def _code_of(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    status = getattr(exc, "status", None)  # LocalChannel's abort carries it
    code = getattr(status, "code", None)
    if isinstance(code, grpc.StatusCode):
        return code
    try:
        code = context.code()
    except Exception:  # an older context without code()
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    # A cancelled task is a caller that went away.
    return grpc.StatusCode.UNKNOWN if isinstance(exc, Exception) else grpc.StatusCode.CANCELLED


def _request_id(metadata: Any) -> str:
    for key, value in metadata:
        if key == "x-request-id" and isinstance(value, str):
            return value[:128]
    return ""
