"""A channel whose unary calls run in this process, through the server's interceptors.

The REST façade lives beside the gRPC server it forwards to. Over a real
channel every REST request paid for a gRPC client call and a server call on
loopback, serialising the request and the reply twice, which cost more than
the façade's own HTTP and JSON work. This channel hands the request to the
same method handlers the server registered, wrapped by the same interceptors
in the same order, so authentication, rate limits and error statuses are those
of a gRPC call. Only unary calls are local: streams keep the real channel,
whose flow control a long-lived subscriber needs.

Given a mark, every call (local or over the real channel) carries it in its
metadata, so the metrics can tell the façade's calls from gRPC clients'.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

Handlers = Mapping[str, grpc.RpcMethodHandler]


class HandlerRecorder:
    """Stands in for the server while services register: records their method handlers."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(service_name, method_handlers)
        for name, handler in method_handlers.items():
            self.handlers[f"/{service_name}/{name}"] = handler


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class _Aborted(grpc.aio.AbortError):
    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing or ())


class _Context:
    """The part of grpc.aio.ServicerContext that the services and interceptors use."""

    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise _Aborted(status)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        raise _Aborted(_Status(code, details, trailing_metadata))

    def peer(self) -> str:
        return "local"

    def time_remaining(self) -> float | None:
        return None


def _error(code: grpc.StatusCode, details: str, trailing: Any = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*tuple(trailing or ())), details
    )


class _LocalUnary:
    def __init__(self, channel: LocalChannel, method: str, remote: Any) -> None:
        self._channel = channel
        self._method = method
        self._remote = remote

    async def __call__(
        self, request: Any, *, metadata: Sequence[tuple[str, str | bytes]] = (), **kwargs: Any
    ) -> Any:
        metadata = self._channel.marked(metadata)
        details = _CallDetails(self._method, tuple(metadata))
        handler = await self._channel.handler_for(details)
        if handler is None:
            raise _error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if handler.unary_unary is None:
            return await self._remote(request, metadata=metadata, **kwargs)
        try:
            return await handler.unary_unary(request, _Context(details.invocation_metadata))
        except _Aborted as aborted:
            status = aborted.status
            raise _error(status.code, status.details, status.trailing_metadata) from None
        except Exception:
            # What a gRPC server answers for an exception that escaped every interceptor.
            log.exception("unhandled error in %s", self._method)
            raise _error(grpc.StatusCode.UNKNOWN, "Unexpected error") from None


class _Marked:
    """A remote multi-callable whose calls carry the channel's mark."""

    def __init__(self, channel: LocalChannel, call: Any) -> None:
        self._channel = channel
        self._call = call

    def __call__(
        self, request: Any, *, metadata: Sequence[tuple[str, str | bytes]] = (), **kwargs: Any
    ) -> Any:
        return self._call(request, metadata=self._channel.marked(metadata), **kwargs)


class LocalChannel(grpc.aio.Channel):
    def __init__(
        self,
        handlers: Handlers,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        remote: grpc.aio.Channel,
        mark: tuple[str, str] | None = None,
    ) -> None:
        self._handlers = handlers
        self._interceptors = tuple(interceptors)
        self._remote = remote
        self._mark = mark

    def marked(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> Sequence[tuple[str, str | bytes]]:
        return metadata if self._mark is None else (*metadata, self._mark)

    async def handler_for(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        """The handler the server would run: each interceptor wraps the next, first outermost."""

        def continuation(i: int) -> Callable[[grpc.HandlerCallDetails], Awaitable[Any]]:
            async def next_(d: grpc.HandlerCallDetails) -> Any:
                if i == len(self._interceptors):
                    return self._handlers.get(d.method)
                return await self._interceptors[i].intercept_service(continuation(i + 1), d)

            return next_

        return await continuation(0)(details)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _LocalUnary(self, method, self._remote.unary_unary(method, *args, **kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._remote.unary_stream(method, *args, **kwargs))

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._remote.stream_unary(method, *args, **kwargs))

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._remote.stream_stream(method, *args, **kwargs))

    def _wrap(self, call: Any) -> Any:
        return call if self._mark is None else _Marked(self, call)

    async def close(self, grace: float | None = None) -> None:
        await self._remote.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._remote.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._remote.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._remote.channel_ready()

    async def __aenter__(self) -> LocalChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
