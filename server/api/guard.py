"""The interceptor every call passes first: authenticate, then rate and stream limits.

It wraps each handler (unary and streaming, async generators and coroutines
that write with context.write) so the tenant it resolves is set, in a context
variable, for exactly the task that runs the handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.api.auth import Authenticator, Credentials, is_open, needs_credentials
from server.api.context import CALL_TENANT, DEFAULT_TENANT, note_tenant
from server.api.errors import ERROR_DOMAIN, store_fault_status, to_status
from server.api.handlers import WrappingInterceptor, forward, rewrap
from server.api.limits import RateLimiter, StreamCounter
from server.api.verify import check_verify_token
from server.domain.errors import DomainError


def rate_limited_status(wait_s: float) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain=ERROR_DOMAIN))
    retry = any_pb2.Any()
    seconds = int(wait_s)
    retry.Pack(
        error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(
                seconds=seconds, nanos=int((wait_s - seconds) * 1_000_000_000)
            )
        )
    )
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED,
            message="rate limit exceeded; retry later",
            details=[info, retry],
        )
    )


def too_many_streams_status(limit: int) -> grpc.Status:
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason="TOO_MANY_STREAMS", domain=ERROR_DOMAIN, metadata={"limit": str(limit)}
        )
    )
    return rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED,
            message=f"at most {limit} concurrent streams per tenant",
            details=[info],
        )
    )


class GuardInterceptor(WrappingInterceptor):
    def __init__(
        self,
        auth: Authenticator,
        rate: RateLimiter,
        streams: StreamCounter,
        stream_limit: int,
        *,
        verify_token: str = "",
        on_limited: Callable[[str], None] | None = None,
    ) -> None:
        self._verify_token = verify_token
        # Told the scope ("rate" or "streams") of each refusal: for the metrics.
        self._on_limited = on_limited
        self._auth = auth
        self._rate = rate
        self._streams = streams
        self._stream_limit = stream_limit

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if is_open(method):
            return handler
        return rewrap(
            handler,
            unary=lambda inner: self._unary(method, inner),
            stream=lambda inner: self._stream(method, inner),
            # Every kind of call is authenticated, whatever its requests are.
            request_streams=True,
        )

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> str:
        """The caller's tenant once it may proceed; aborts the call otherwise."""
        metadata = context.invocation_metadata()
        try:
            if needs_credentials(method, metadata):
                tenant = await self._auth.tenant_for(Credentials.from_metadata(metadata))
            else:
                # A webhook call without credentials acts for the default
                # tenant: its token is checked before it may spend that
                # tenant's rate budget.
                check_verify_token(context, self._verify_token)
                tenant = DEFAULT_TENANT
        except DomainError as err:
            await context.abort_with_status(to_status(err))
            raise  # abort raises; this only satisfies the type checker
        except Exception as exc:
            # Looking up a key needs the store; while it is away the caller
            # is told to retry, not that we broke.
            status = store_fault_status(exc)
            if status is None:
                raise
            await context.abort_with_status(status)
            raise  # abort raises; this only satisfies the type checker
        note_tenant(tenant)
        wait = self._rate.take(tenant)
        if wait > 0:
            if self._on_limited is not None:
                self._on_limited("rate")
            await context.abort_with_status(rate_limited_status(wait))
        return tenant

    def _unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            tenant = await self._admit(method, context)
            token = CALL_TENANT.set(tenant)
            try:
                return await inner(request, context)
            finally:
                CALL_TENANT.reset(token)

        return call

    def _stream(self, method: str, inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            tenant = await self._admit(method, context)
            if not self._streams.enter(tenant):
                if self._on_limited is not None:
                    self._on_limited("streams")
                await context.abort_with_status(too_many_streams_status(self._stream_limit))
            # Set without reset: a generator may resume in another context, and
            # the value dies with the task that serves this one call anyway.
            CALL_TENANT.set(tenant)
            try:
                async for item in forward(inner(request, context)):
                    yield item
            finally:
                self._streams.leave(tenant)

        return call
