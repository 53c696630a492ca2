"""Rebuilding a gRPC method handler around new behaviour, for the server's interceptors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Any

import grpc

Behaviour = Callable[..., Any]
Wrap = Callable[[Behaviour], Behaviour]


def rewrap(
    handler: grpc.RpcMethodHandler,
    *,
    unary: Wrap,
    stream: Wrap,
    request_deserializer: Callable[[bytes], Any] | None = None,
    request_streams: bool = False,
) -> grpc.RpcMethodHandler:
    """The same method with its behaviour wrapped: by `unary` where it answers
    once, by `stream` where it answers with a stream.

    A method that reads a stream of requests (only reflection does) is left as
    it is unless `request_streams` is set: wrappers that look at the request
    would be handed an iterator instead.
    """
    decode = request_deserializer or handler.request_deserializer
    encode = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary(handler.unary_unary), request_deserializer=decode, response_serializer=encode
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream(handler.unary_stream), request_deserializer=decode, response_serializer=encode
        )
    if not request_streams:
        return handler
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            unary(handler.stream_unary), request_deserializer=decode, response_serializer=encode
        )
    return grpc.stream_stream_rpc_method_handler(
        stream(handler.stream_stream), request_deserializer=decode, response_serializer=encode
    )


async def forward(result: Any) -> AsyncIterator[Any]:
    """What a stream handler produced, yielded on: a stream handler is either an
    async generator or a coroutine that writes with context.write()."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that wraps the behaviour of every method the server has."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self.wrap(handler, handler_call_details.method)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler of `method` as this interceptor serves it."""
        raise NotImplementedError


class ResolvedChain(grpc.aio.ServerInterceptor):
    """A chain of interceptors whose handler for each method is built once.

    grpc.aio runs every interceptor's intercept_service on every call, and each
    of the server's builds a new handler around the one it is given: about 4 %
    of a SendMessage's CPU went on rebuilding the same chain. The server's
    interceptors only wrap, and what they wrap depends on the method alone, or
    also on a mark in the call's metadata, which an interceptor names with a
    `variant(details)` method. Interceptors that do anything else on each call
    in intercept_service do not belong in this chain.
    """

    def __init__(self, interceptors: Sequence[grpc.aio.ServerInterceptor]) -> None:
        self._interceptors = tuple(interceptors)
        self._variants = tuple(
            variant for i in self._interceptors if (variant := getattr(i, "variant", None))
        )
        # Only methods the server has: a name nobody serves is not remembered.
        self._built: dict[tuple[str, tuple[Hashable, ...]], grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        key = (
            handler_call_details.method,
            tuple(variant(handler_call_details) for variant in self._variants),
        )
        try:
            return self._built[key]
        except KeyError:
            pass
        handler = await self._build(0, continuation, handler_call_details)
        if handler is not None:
            self._built[key] = handler
        return handler

    async def _build(
        self,
        i: int,
        innermost: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if i == len(self._interceptors):
            return await innermost(details)

        async def next_(d: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            return await self._build(i + 1, innermost, d)

        return await self._interceptors[i].intercept_service(next_, details)
