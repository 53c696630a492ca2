"""Interceptors wrap each method's handler once, not on every call."""

from __future__ import annotations

from typing import Any

import grpc

from server.api.handlers import WrappingInterceptor


class _Counting(WrappingInterceptor):
    def __init__(self) -> None:
        self.wrapped: list[str] = []

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        self.wrapped.append(method)
        return grpc.unary_unary_rpc_method_handler(handler.unary_unary)


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def _echo(request: Any, _context: Any) -> Any:
    return request


async def test_a_method_is_wrapped_once_and_again_only_for_a_new_handler() -> None:
    first = grpc.unary_unary_rpc_method_handler(_echo)
    second = grpc.unary_unary_rpc_method_handler(_echo)
    below = {"/s/A": first, "/s/B": first}

    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return below[details.method]

    interceptor = _Counting()
    a1 = await interceptor.intercept_service(continuation, _Details("/s/A"))
    a2 = await interceptor.intercept_service(continuation, _Details("/s/A"))
    assert a1 is a2 and interceptor.wrapped == ["/s/A"]
    # Another method with the same handler below is wrapped for itself.
    b = await interceptor.intercept_service(continuation, _Details("/s/B"))
    assert b is not a1 and interceptor.wrapped == ["/s/A", "/s/B"]
    # A handler that changed below is wrapped afresh.
    below["/s/A"] = second
    a3 = await interceptor.intercept_service(continuation, _Details("/s/A"))
    assert a3 is not a1 and interceptor.wrapped == ["/s/A", "/s/B", "/s/A"]
    # Each interceptor keeps its own wrappers.
    other = _Counting()
    assert await other.intercept_service(continuation, _Details("/s/A")) is not a3
