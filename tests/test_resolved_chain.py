"""The server's interceptor chain is built once per method, and still runs on every call.

grpc.aio asks every interceptor for a handler on every call; ResolvedChain asks
them once per method (and per variant an interceptor names, such as the
façade's mark) and hands the same handler out after that. What the handlers
do on each call must not change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2

from server.api.handlers import ResolvedChain, WrappingInterceptor

SERVICE = "test.Echo"
MARK = ("x-mark", "facade")
Text = wrappers_pb2.StringValue


class Tagging(WrappingInterceptor):
    """Adds its tag to each reply; counts the handlers it builds."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.built: Counter[str] = Counter()
        self.asked: Counter[str] = Counter()

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self.asked[details.method] += 1
        return await super().intercept_service(continuation, details)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        self.built[method] += 1
        inner = handler.unary_unary

        async def call(request: Text, context: grpc.aio.ServicerContext) -> Text:
            reply = await inner(request, context)
            return Text(value=f"{reply.value}+{self.tag}")

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class Marked(Tagging):
    """Tags only calls that carry the mark: its handler depends on the metadata."""

    def variant(self, details: grpc.HandlerCallDetails) -> bool:
        return MARK in (details.invocation_metadata or ())

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not self.variant(details):
            return handler
        return self.wrap(handler, details.method)


# How to call the server, and its outermost and marked interceptors.
Served = tuple[Callable[..., Awaitable[Any]], Tagging, Marked]


async def _echo(request: Text, context: grpc.aio.ServicerContext) -> Text:
    return Text(value=request.value.upper())


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    outer, marked = Tagging("outer"), Marked("marked")
    server = grpc.aio.server(interceptors=[ResolvedChain([outer, marked, Tagging("inner")])])
    handler = grpc.unary_unary_rpc_method_handler(
        _echo, request_deserializer=Text.FromString, response_serializer=Text.SerializeToString
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    async def call(method: str, metadata: Any = ()) -> Any:
        stub = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=Text.SerializeToString,
            response_deserializer=Text.FromString,
        )
        try:
            return (await stub(Text(value="hi"), metadata=metadata)).value
        except grpc.aio.AioRpcError as err:
            return err.code()

    try:
        yield call, outer, marked
    finally:
        await channel.close()
        await server.stop(None)


async def test_each_method_is_built_once_and_every_call_runs_the_whole_chain(
    served: Served,
) -> None:
    call, outer, _marked = served
    for _ in range(3):
        assert await call("Echo") == "HI+inner+outer"
    assert outer.built == {f"/{SERVICE}/Echo": 1}
    assert outer.asked == {f"/{SERVICE}/Echo": 1}


async def test_a_variant_gets_its_own_handler(
    served: Served,
) -> None:
    call, outer, marked = served
    for _ in range(2):
        assert await call("Echo", (MARK,)) == "HI+inner+marked+outer"
        assert await call("Echo") == "HI+inner+outer"
    assert outer.built == {f"/{SERVICE}/Echo": 2}  # one per variant
    assert marked.built == {f"/{SERVICE}/Echo": 1}


async def test_a_method_nobody_serves_is_not_remembered(
    served: Served,
) -> None:
    call, outer, _marked = served
    for _ in range(3):
        assert await call("Missing") is grpc.StatusCode.UNIMPLEMENTED
    # Asked each time: caching names nobody serves would let a caller fill memory.
    assert outer.asked == {f"/{SERVICE}/Missing": 3}
    assert not outer.built
