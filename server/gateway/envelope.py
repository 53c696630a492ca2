"""The ApiResponse envelope every REST answer is wrapped in, and gRPC status mapping."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "ErrorDetail",
    "GatewayError",
    "error_body",
    "error_from_status",
    "http_status_for",
    "status_key_for_http",
    "success_body",
]

# grpc-gateway's mapping, so clients that know it are not surprised.
_HTTP_FOR_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

_DETAILS_KEY = "grpc-status-details-bin"


def http_status_for(code: grpc.StatusCode) -> int:
    return _HTTP_FOR_CODE.get(code, 500)


def status_key_for_http(status: int) -> str:
    """The gRPC code name for an HTTP failure the gateway produced itself."""
    if status == 405:
        return "UNIMPLEMENTED"
    for code, mapped in _HTTP_FOR_CODE.items():
        if mapped == status and code is not grpc.StatusCode.OK:
            return code.name
    return "INTERNAL" if status >= 500 else "UNKNOWN"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _now_ms() -> int:
    return int(time.time() * 1000)


def success_body(
    status: int, response_json: dict[str, Any], response_desc: Descriptor, traceid: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": status,
        "statusKey": "SUCCESS",
        "message": _phrase(status),
    }
    results = response_desc.fields_by_name.get("results")
    if results is not None and results.is_repeated:
        # List answers keep the page in "results" and paging data in "meta", the
        # shape list clients of the public API already read.
        rest = dict(response_json)
        body["results"] = rest.pop(results.json_name, [])
        body["meta"] = rest
    else:
        body["data"] = response_json
    body["timestamp"] = _now_ms()
    body["traceid"] = traceid
    return body


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    field: str
    description: str


@dataclass
class GatewayError(Exception):
    """A failure ready to be rendered: raised by the gateway itself, or built from a
    gRPC status."""

    http_status: int
    status_key: str  # gRPC code name, e.g. "INVALID_ARGUMENT"
    message: str
    reason: str  # UPPER_SNAKE, ErrorInfo.reason when the server gave one
    errors: tuple[ErrorDetail, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    # Whole seconds for a Retry-After header, from the status's RetryInfo.
    retry_after_s: int | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)


def error_body(error: GatewayError, traceid: str) -> dict[str, Any]:
    return {
        "status": error.http_status,
        "statusKey": error.status_key,
        "message": error.message,
        "messageKey": error.reason,
        "errors": [
            {"field": e.field, "code": error.reason, "description": e.description}
            for e in error.errors
        ],
        "timestamp": _now_ms(),
        "traceid": traceid,
    }


def error_from_status(code: grpc.StatusCode, message: str, trailing_metadata: Any) -> GatewayError:
    """Decode the rich ``google.rpc.Status`` from the trailers, when there is one."""
    reason = code.name
    violations: list[ErrorDetail] = []
    metadata: dict[str, str] = {}
    retry_after: int | None = None
    rich = _rich_status(trailing_metadata)
    if rich is not None:
        message = rich.message or message
        for detail in rich.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason or reason
                metadata.update(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(ErrorDetail(v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
                # HTTP wants whole seconds; rounding down would invite an early retry.
                retry_after = max(1, math.ceil(delay))
    return GatewayError(
        http_status=http_status_for(code),
        status_key=code.name,
        message=message or code.name,
        reason=reason,
        errors=tuple(violations),
        metadata=metadata,
        retry_after_s=retry_after,
    )


def _rich_status(trailing_metadata: Any) -> status_pb2.Status | None:
    for key, value in trailing_metadata or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a malformed trailer must not hide the real status
                return None
    return None
