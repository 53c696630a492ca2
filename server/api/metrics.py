"""The outermost interceptor: counts and times every gRPC call.

REST calls reach the same handlers (unary ones through LocalChannel, streams
over a loopback channel) and are measured at the HTTP edge instead, where
their HTTP status is known. The façade marks its calls with a per-process
token in the metadata, so they are told apart here and never counted twice;
a client cannot forge the mark without reading it from the process.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server.api.handlers import forward, rewrap
from server.observability.metrics import HubMetrics

GATEWAY_MARK_KEY = "x-cimhub-gateway"
# Event streams of the hub's own API, as opposed to health watches.
_SUBSCRIPTIONS = "/cim.v1."


def new_gateway_mark() -> tuple[str, str]:
    return GATEWAY_MARK_KEY, secrets.token_hex(16)


def _code_of(context: grpc.aio.ServicerContext) -> str:
    try:
        code = context.code()
    except (AttributeError, NotImplementedError):
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code in (None, 0) else "UNKNOWN"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: HubMetrics, gateway_mark: tuple[str, str]) -> None:
        self._metrics = metrics
        self._mark = gateway_mark

    def variant(self, details: grpc.HandlerCallDetails) -> bool:
        """Whether the call is the façade's: it is measured at the HTTP edge."""
        return self._mark in (details.invocation_metadata or ())

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        rest = self.variant(details)
        if handler.unary_stream is not None:
            return rewrap(
                handler,
                unary=lambda inner: inner,
                stream=lambda inner: self._stream(method, inner, rest),
            )
        if rest:
            return handler
        return rewrap(handler, unary=lambda inner: self._unary(method, inner), stream=lambda i: i)

    def _unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        bound = self._metrics.request

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            began = time.perf_counter()
            code = "UNKNOWN"
            try:
                result = await inner(request, context)
                code = _code_of(context)
                return result
            except grpc.aio.AbortError:
                code = _code_of(context)
                raise
            finally:
                counter, timing = bound("grpc", method, code)
                counter.inc()
                timing.observe(time.perf_counter() - began)

        return call

    def _stream(
        self, method: str, inner: Callable[..., Any], rest: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        subscribers = (
            self._metrics.subscribers("rest" if rest else "grpc")
            if method.startswith(_SUBSCRIPTIONS)
            else None
        )
        bound = self._metrics.request

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if subscribers is not None:
                subscribers.inc()
            code = "UNKNOWN"
            try:
                async for item in forward(inner(request, context)):
                    yield item
                code = _code_of(context)
            except grpc.aio.AbortError:
                code = _code_of(context)
                raise
            except BaseException:
                # A stream the client left ends in cancellation.
                code = "CANCELLED"
                raise
            finally:
                if subscribers is not None:
                    subscribers.dec()
                if not rest:
                    # Streams are counted when they end; their length is not a latency.
                    bound("grpc", method, code)[0].inc()

        return call
