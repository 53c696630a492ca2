"""aiohttp application that serves the REST façade by forwarding to gRPC.

One generic handler per annotated RPC: the HTTP request becomes the proto request,
the call goes over the given channel like any other gRPC client, and the reply or
status is wrapped in the ApiResponse envelope.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from json import JSONDecodeError
from typing import Any

import grpc
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from server.api.errors import store_fault_status
from server.telemetry import tracing
from server.telemetry.logs import event

from .envelope import (
    ErrorDetail,
    GatewayError,
    error_body,
    error_from_status,
    status_key_for_http,
    success_body,
)
from .jsonmap import JsonMappingError, descriptor_of, loads, to_json
from .routes import Route, build_request, build_routes
from .streaming import stream_handler

__all__ = [
    "CHANNEL_KEY",
    "HTTP_LIMITS",
    "ROUTES_KEY",
    "AccessLog",
    "create_app",
    "route_table",
]

log = logging.getLogger(__name__)

CHANNEL_KEY = web.AppKey("cim_gateway_channel", grpc.aio.Channel)
# A caller's x-request-id up to this long is echoed; otherwise one is made up.
MAX_REQUEST_ID = 128
# What the HTTP server reads of a request before refusing it, in plain text, as
# not valid HTTP: a request line with room for every query parameter at its
# documented limit, percent-encoded, and aiohttp's own limit on a header value.
MAX_REQUEST_LINE = 64 * 1024
MAX_HEADER_VALUE = 8190
HTTP_LIMITS = {"max_line_size": MAX_REQUEST_LINE, "max_field_size": MAX_HEADER_VALUE}
ROUTES_KEY = web.AppKey[tuple[Route, ...]]("cim_gateway_routes")
_MAX_BODY_KEY = web.AppKey("cim_gateway_max_body", int)
# RequestKey arrived in a later aiohttp than the declared floor; the plain string
# key works everywhere and only warns on newer releases.
_TRACE: Any = (
    web.RequestKey("cim_gateway_traceid", list)
    if hasattr(web, "RequestKey")
    else "cim_gateway_traceid"
)
_REQUEST_ID: Any = (
    web.RequestKey("cim_gateway_request_id", str)
    if hasattr(web, "RequestKey")
    else "cim_gateway_request_id"
)

# HTTP header -> gRPC metadata key. Everything else stays at the HTTP edge.
_FORWARDED_HEADERS = {
    "authorization": "authorization",
    "x-api-key": "x-api-key",
    "x-api-id": "x-api-id",
    "idempotency-key": "idempotency-key",
    "x-verify-token": "x-verify-token",
    # W3C trace context: the server's tracing interceptor continues the caller's
    # trace, so one REST call is one trace.
    "traceparent": "traceparent",
    "tracestate": "tracestate",
}

_CREDENTIALS = frozenset({"authorization", "x-api-key", "x-api-id", "x-verify-token"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What _read_json gives for a request without a body (JSON null is a body).
_ABSENT: Any = object()


def create_app(
    channel: grpc.aio.Channel,
    *,
    max_body_bytes: int = 1 << 20,
    outer_middlewares: Sequence[Any] = (),
) -> web.Application:
    """The façade; outer_middlewares run before (around) the error envelope."""
    app = web.Application(
        middlewares=[*outer_middlewares, _error_middleware], client_max_size=max_body_bytes
    )
    routes = build_routes()
    app[CHANNEL_KEY] = channel
    app[ROUTES_KEY] = tuple(routes)
    app[_MAX_BODY_KEY] = max_body_bytes
    for route in routes:
        handler = (
            stream_handler(channel, route, _metadata, _trace_of)
            if route.streaming
            else _handler_for(channel, route)
        )
        app.router.add_route(route.http_method, route.aiohttp_path, handler)
    return app


def _trace_of(request: web.Request) -> str:
    """The W3C trace id of the request: the one its call ran under when it ran here,
    else the caller's, else one made up for this answer."""
    seen: list[str] = request[_TRACE]
    if not seen:
        # Kept, so every part of one answer names the same trace.
        seen.append(_fallback_trace_id(request))
    return seen[0]


def _fallback_trace_id(request: web.Request) -> str:
    given = tracing.trace_id_in(request.headers.get("traceparent", "").strip())
    return given if given and given != "0" * 32 else uuid.uuid4().hex


def route_table(app: web.Application) -> list[Route]:
    """The routes ``app`` serves, for the OpenAPI generator and for tests."""
    routes: tuple[Route, ...] = app[ROUTES_KEY]
    return list(routes)


def _bad_request(reason: str, field: str, description: str) -> GatewayError:
    return GatewayError(
        http_status=400,
        status_key="INVALID_ARGUMENT",
        message=f"{field}: {description}" if field else description,
        reason=reason,
        errors=(ErrorDetail(field, description),),
    )


def _is_json_type(content_type: str) -> bool:
    # aiohttp has already dropped parameters such as charset and lower-cased it.
    return content_type == "application/json" or content_type.endswith("+json")


def _unsupported_media_type(content_type: str) -> GatewayError:
    description = f"must be application/json, got {content_type}"
    return GatewayError(
        http_status=415,
        status_key="INVALID_ARGUMENT",
        message=f"content-type: {description}",
        reason="UNSUPPORTED_MEDIA_TYPE",
        errors=(ErrorDetail("content-type", description),),
    )


async def _read_json(request: web.Request) -> Any:
    """The decoded body, ``_ABSENT`` when there is none."""
    limit = request.app[_MAX_BODY_KEY]
    # Refuse a declared oversize body before buffering any of it.
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
    raw = await request.read()
    if not raw.strip():
        return _ABSENT
    # Only JSON is parsed, so a form or a text body cannot be half understood.
    if "Content-Type" not in request.headers:
        raise _unsupported_media_type("none")
    if not _is_json_type(request.content_type):
        raise _unsupported_media_type(request.content_type)
    try:
        return loads(raw)
    except JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise _bad_request(
            "MALFORMED_JSON", "body", f"malformed JSON: {exc.msg} at {where}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise _bad_request("MALFORMED_JSON", "body", "body is not UTF-8 text") from exc
    except RecursionError as exc:
        raise _bad_request("MALFORMED_JSON", "body", "JSON nested too deeply") from exc


def _metadata_safe(value: str) -> bool:
    # gRPC rejects non-ASCII text metadata; catch it here as a client error
    # rather than let the call fail as an internal one.
    return value.isascii() and value.isprintable()


def _metadata(request: web.Request) -> list[tuple[str, str]]:
    metadata = [("x-request-id", request[_REQUEST_ID])]
    for header, key in _FORWARDED_HEADERS.items():
        value = request.headers.get(header)
        if value is None:
            continue
        if not _metadata_safe(value):
            if header in _CREDENTIALS:
                # No credential holds such text, so the caller is not authenticated.
                raise _unauthenticated(header, "must be printable ASCII")
            raise _bad_request("INVALID_HEADER", header, "must be printable ASCII")
        metadata.append((key, value))
    return metadata


def _unauthenticated(header: str, description: str) -> GatewayError:
    return GatewayError(
        http_status=401,
        status_key="UNAUTHENTICATED",
        message=f"{header}: {description}",
        reason="INVALID_CREDENTIALS",
        errors=(ErrorDetail(header, description),),
    )


def _handler_for(channel: grpc.aio.Channel, route: Route) -> Handler:
    call = channel.unary_unary(
        route.method_full_path,
        request_serializer=route.request_cls.SerializeToString,
        response_deserializer=route.response_cls.FromString,
    )
    response_desc = descriptor_of(route.response_cls)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await _read_json(request) if route.body else None
        if body is _ABSENT:
            if not route.body_optional:
                raise _bad_request("VALIDATION_FAILED", "body", "required")
            body = None
        elif route.body and (body is None or (route.body == "*" and not isinstance(body, dict))):
            raise _bad_request("INVALID_BODY", "body", "expected a JSON object")
        message = build_request(route, body, request.match_info, request.query.items())
        reply = await call(message, metadata=_metadata(request))
        payload = success_body(
            route.success_code, to_json(reply), response_desc, _trace_of(request)
        )
        return web.json_response(payload, status=route.success_code)

    return handle


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("x-request-id", "")
    usable = given and len(given) <= MAX_REQUEST_ID and _metadata_safe(given)
    request_id = given if usable else uuid.uuid4().hex
    request[_REQUEST_ID] = request_id
    with tracing.watch_trace_id() as seen:
        request[_TRACE] = seen
        response = await _answer(request, handler)
    response.headers["X-Request-Id"] = request_id
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return _render(exc, _trace_of(request))
    except JsonMappingError as exc:
        error = _bad_request("VALIDATION_FAILED", exc.field, exc.description)
        return _render(error, _trace_of(request))
    except grpc.aio.AioRpcError as exc:
        error = error_from_status(exc.code(), exc.details() or "", exc.trailing_metadata())
        return _render(error, _trace_of(request))
    except web.HTTPException as exc:
        response = _render(_from_http_exception(exc), _trace_of(request))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        traceid = _trace_of(request)
        # Routes outside the gRPC API (provider callbacks) reach the store too:
        # its outages get the same status as through the API.
        status = store_fault_status(exc)
        if status is not None:
            log.warning("%s failed, the store is unavailable: %r", request.path, exc)
            error = error_from_status(status.code, status.details, status.trailing_metadata)
            return _render(error, traceid)
        log.exception(
            "unhandled error in REST gateway",
            extra={"cimhub_event": "request.failed", "cimhub_fields": {"trace_id": traceid}},
        )
        return _render(GatewayError(500, "INTERNAL", "internal error", "INTERNAL"), traceid)


class AccessLog(AbstractAccessLogger):
    """One line per HTTP request, without its query string: callbacks and
    verification handshakes may carry tokens there."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        seen = request.get(_TRACE)
        event(
            self.logger,
            "http.request",
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            trace_id=seen[0] if seen else "",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round(time * 1000, 3),
        )


def _from_http_exception(exc: web.HTTPException) -> GatewayError:
    if exc.status == 413:
        return GatewayError(413, "INVALID_ARGUMENT", "request body too large", "BODY_TOO_LARGE")
    key = status_key_for_http(exc.status)
    return GatewayError(exc.status, key, exc.reason, key)


def _render(error: GatewayError, traceid: str) -> web.Response:
    response = web.json_response(error_body(error, traceid), status=error.http_status)
    if error.retry_after_s is not None:
        response.headers["Retry-After"] = str(error.retry_after_s)
    return response
