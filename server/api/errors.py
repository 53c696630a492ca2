"""One interceptor turns domain errors into rich gRPC statuses.

The status carries google.rpc ErrorInfo (the UPPER_SNAKE reason) and, for bad
input, BadRequest field violations, in the grpc-status-details-bin trailer.
A database that is out of reach is UNAVAILABLE with RetryInfo, never INTERNAL,
and a write whose commit was cut off is ABORTED: the REST gateway maps these
statuses too, so this is the one place where store failures get their meaning.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.api.handlers import WrappingInterceptor, forward, rewrap
from server.domain.errors import DomainError, FieldViolation
from server.storage.faults import RETRY_AFTER_S, OutcomeUnknown, is_unavailable

log = logging.getLogger(__name__)
ERROR_DOMAIN = "cimhub"
# A status travels in trailers, and a client refuses trailers over its
# metadata limit (8 KiB by default in gRPC's core) with a RESOURCE_EXHAUSTED
# of its own, which would hide every violation of a batch with a thousand bad
# numbers. So the violations listed stop at VIOLATION_BYTES (base64 makes it a
# third more on the wire) and ErrorInfo says how many there were; the message,
# which goes out twice (grpc-message and inside the details), stops at
# MESSAGE_CHARS.
VIOLATION_BYTES = 3000
MESSAGE_CHARS = 400
# Each violation's framing inside BadRequest, roughly.
_VIOLATION_OVERHEAD = 6


def to_status(err: DomainError) -> grpc.Status:
    metadata = dict(err.metadata)
    listed = _within_budget(err.violations)
    if len(listed) < len(err.violations):
        metadata["violationCount"] = str(len(err.violations))
        metadata["violationsListed"] = str(len(listed))
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=metadata)
    )
    details = [info]
    if listed:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in listed
                ]
            )
        )
        details.append(bad)
    code = code_pb2.Code.Value(err.code.value)
    message = err.message
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 1] + "…"
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))


def _within_budget(violations: tuple[FieldViolation, ...]) -> tuple[FieldViolation, ...]:
    size = 0
    for count, v in enumerate(violations):
        size += len(v.field.encode()) + len(v.description.encode()) + _VIOLATION_OVERHEAD
        if size > VIOLATION_BYTES:
            return violations[:count]
    return violations


def _detail(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _retry_info(seconds: float) -> any_pb2.Any:
    whole = int(seconds)
    delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    return _detail(error_details_pb2.RetryInfo(retry_delay=delay))


def store_fault_status(exc: BaseException) -> grpc.Status | None:
    """The status for a store failure a retry can get past; None for anything else."""
    if isinstance(exc, OutcomeUnknown):
        reason = "OUTCOME_UNKNOWN"
        code = code_pb2.ABORTED
        message = (
            "the database connection was lost while this request was committing, so it "
            "may have been applied; retry with the same Idempotency-Key (request_id), "
            "which returns the original result if it was"
        )
    elif is_unavailable(exc):
        reason = "STORE_UNAVAILABLE"
        code = code_pb2.UNAVAILABLE
        message = "the database is unavailable; nothing was changed, retry later"
    else:
        return None
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    return rpc_status.to_status(
        status_pb2.Status(
            code=code,
            message=message,
            details=[_detail(info), _retry_info(RETRY_AFTER_S)],
        )
    )


def unexpected_status(exc: BaseException, where: str) -> grpc.Status:
    """A store outage's status, or INTERNAL (logged) for a real failure."""
    status = store_fault_status(exc)
    if status is not None:
        log.warning("%s failed, the store is unavailable: %r", where, exc)
        return status
    log.error("unhandled error in %s", where, exc_info=exc)
    return internal_status()


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
        except Exception as exc:
            await context.abort_with_status(unexpected_status(exc, "unary call"))

    return call


def _wrap_stream(inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    # Stream handlers are either async generators or coroutines that write
    # with context.write(); the latter can give up on a write that blocks.
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in forward(inner(request, context)):
                yield item
        except DomainError as err:
            await context.abort_with_status(to_status(err))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await context.abort_with_status(unexpected_status(exc, "stream"))

    return call
