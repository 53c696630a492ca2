"""One interceptor turns domain errors into rich gRPC statuses.

The status carries google.rpc ErrorInfo (the UPPER_SNAKE reason) and, for bad
input, BadRequest field violations, in the grpc-status-details-bin trailer.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.api.handlers import WrappingInterceptor, rewrap
from server.domain.errors import DomainError

log = logging.getLogger(__name__)
ERROR_DOMAIN = "cimhub"


def to_status(err: DomainError) -> grpc.Status:
    details = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason=err.reason, domain=ERROR_DOMAIN, metadata=dict(err.metadata)
        )
    )
    details.append(info)
    if err.violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in err.violations
                ]
            )
        )
        details.append(bad)
    code = code_pb2.Code.Value(err.code.value)
    return rpc_status.to_status(status_pb2.Status(code=code, message=err.message, details=details))


def internal_status() -> grpc.Status:
    # Unexpected failures say nothing about internals to the caller.
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))


class ErrorInterceptor(WrappingInterceptor):
    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return rewrap(handler, unary=_wrap_unary, stream=_wrap_stream)


def _wrap_unary(inner: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await inner(request, context)
        except DomainError as err:
            await context.abort_with_status(to_status(err))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error in unary call")
            await context.abort_with_status(internal_status())

    return call


def _wrap_stream(inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    # Stream handlers are either async generators or coroutines that write
    # with context.write(); the latter can give up on a write that blocks.
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            result = inner(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except DomainError as err:
            await context.abort_with_status(to_status(err))
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error in stream")
            await context.abort_with_status(internal_status())

    return call
