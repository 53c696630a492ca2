"""LocalChannel answers a unary call as the server it stands beside would.

Each case is called twice, over a real loopback channel and through
LocalChannel, against the same handlers and interceptors, and the outcomes
must match: the reply, or the status code, details and rich-status trailer.
The local call must never reach the server's socket, in this pair as in the
real hub's REST façade.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.api.errors import ErrorInterceptor
from server.api.local_channel import HandlerRecorder, LocalChannel
from server.domain.errors import FieldViolation, invalid
from support.hub import AUTH_HEADERS, rest_call, rest_session, running_hub

SERVICE = "test.Echo"
Text = wrappers_pb2.StringValue


class _OverTheWire(grpc.aio.ServerInterceptor):
    """Counts the calls the server takes off its sockets; LocalChannel's never pass here."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self.calls.append(details.method)
        return await continuation(details)


class _Order(grpc.aio.ServerInterceptor):
    """Notes the order interceptors run in, and refuses calls without a key."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self._name = name
        self._seen = seen

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        self._seen.append(self._name)
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            keys = dict(context.invocation_metadata() or ())
            if self._name == "outer" and keys.get("x-api-key") != "k":
                status = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message="no key")
                await context.abort_with_status(rpc_status.to_status(status))
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _echo(request: Text, context: grpc.aio.ServicerContext) -> Text:
    return Text(value=request.value.upper())


async def _refuse(request: Text, context: grpc.aio.ServicerContext) -> Text:
    raise invalid([FieldViolation("value", "text is bad")])


async def _crash(request: Text, context: grpc.aio.ServicerContext) -> Text:
    raise RuntimeError("boom")


def _handlers() -> dict[str, grpc.RpcMethodHandler]:
    def unary(fn: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=Text.FromString, response_serializer=Text.SerializeToString
        )

    return {"Echo": unary(_echo), "Refuse": unary(_refuse), "Crash": unary(_crash)}


@pytest.fixture
def wire() -> _OverTheWire:
    return _OverTheWire()


@pytest.fixture
async def pair(
    wire: _OverTheWire,
) -> AsyncIterator[tuple[grpc.aio.Channel, LocalChannel, list[str]]]:
    seen: list[str] = []
    chain = (_Order("outer", seen), _Order("inner", seen), ErrorInterceptor())
    # Only the server's socket path counts calls; LocalChannel gets the chain alone.
    server = grpc.aio.server(interceptors=(wire, *chain))
    recorder: Any = HandlerRecorder(server)
    handlers = _handlers()
    recorder.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    recorder.add_registered_method_handlers(SERVICE, handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    remote = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    local = LocalChannel(recorder.handlers, chain, grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
    try:
        yield remote, local, seen
    finally:
        await remote.close()
        await local.close()
        await server.stop(None)


async def _outcome(channel: grpc.aio.Channel, method: str, metadata: Any) -> tuple[Any, ...]:
    call = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=Text.SerializeToString,
        response_deserializer=Text.FromString,
    )
    try:
        reply = await call(Text(value="hi"), metadata=metadata)
    except grpc.aio.AioRpcError as err:
        trailer = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
        rich = status_pb2.Status.FromString(trailer) if isinstance(trailer, bytes) else None
        return ("error", err.code(), err.details(), rich)
    return ("reply", reply.value)


@pytest.mark.parametrize(
    "method, metadata",
    [
        ("Echo", (("x-api-key", "k"),)),
        ("Echo", ()),  # refused by the outer interceptor
        ("Refuse", (("x-api-key", "k"),)),  # a domain error, turned into a rich status
        ("Crash", (("x-api-key", "k"),)),  # an unexpected error: INTERNAL, no internals
        ("Missing", (("x-api-key", "k"),)),  # no such method
    ],
)
async def test_local_calls_answer_as_the_server_does_without_reaching_its_socket(
    pair: tuple[grpc.aio.Channel, LocalChannel, list[str]],
    wire: _OverTheWire,
    method: str,
    metadata: Any,
) -> None:
    remote, local, seen = pair
    over_the_wire = await _outcome(remote, method, metadata)
    # The positive control: a call over the real channel is seen on the socket.
    assert wire.calls == [f"/{SERVICE}/{method}"]
    seen_remote = list(seen)
    seen.clear()
    in_process = await _outcome(local, method, metadata)
    assert wire.calls == [f"/{SERVICE}/{method}"], "the local call went over the socket"
    assert in_process == over_the_wire
    assert seen == seen_remote
    if method == "Echo" and metadata:
        assert in_process == ("reply", "HI")
        assert seen == ["outer", "inner"]
    if method == "Refuse":
        rich = in_process[3]
        assert in_process[1] is grpc.StatusCode.INVALID_ARGUMENT
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in rich.details if d.Is(bad.DESCRIPTOR))
        assert [v.field for v in bad.field_violations] == ["value"]


def _connections_to(port: int) -> int:
    """Established TCP connections, IPv4 or IPv6, whose remote end is this port."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


async def test_the_rest_facades_unary_calls_open_no_connection_to_the_grpc_port(
    db_url: str,
) -> None:
    async with running_hub(db_url) as hub:
        assert _connections_to(hub.grpc_port) == 0
        for _ in range(3):
            status, body = await rest_call(hub, "GET", "/api/v1/messages?pageSize=1", AUTH_HEADERS)
            assert status == 200, body
        assert _connections_to(hub.grpc_port) == 0
        # The positive control: the façade's streams do take its real channel,
        # and that connection is seen.
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/notifications/stream"
        async with rest_session() as http, http.get(url) as resp:
            assert resp.status == 200
            await resp.content.readline()
            assert _connections_to(hub.grpc_port) >= 1
