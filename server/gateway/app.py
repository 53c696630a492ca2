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

from server.api.errors import store_fault_status

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

__all__ = ["CHANNEL_KEY", "ROUTES_KEY", "create_app", "route_table"]

log = logging.getLogger(__name__)

CHANNEL_KEY = web.AppKey("cim_gateway_channel", grpc.aio.Channel)
# A caller's x-request-id up to this long is echoed; otherwise one is made up.
MAX_REQUEST_ID = 128
ROUTES_KEY = web.AppKey[tuple[Route, ...]]("cim_gateway_routes")
_MAX_BODY_KEY = web.AppKey("cim_gateway_max_body", int)
# RequestKey arrived in a later aiohttp than the declared floor; the plain string
# key works everywhere and only warns on newer releases.
_TRACE: Any = (
    web.RequestKey("cim_gateway_traceid", str)
    if hasattr(web, "RequestKey")
    else "cim_gateway_traceid"
)

# HTTP header -> gRPC metadata key. Everything else stays at the HTTP edge.
_FORWARDED_HEADERS = {
    "authorization": "authorization",
    "x-api-key": "x-api-key",
    "x-api-id": "x-api-id",
    "idempotency-key": "idempotency-key",
    "x-verify-token": "x-verify-token",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    return str(request[_TRACE])


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
    limit = request.app[_MAX_BODY_KEY]
    # Refuse a declared oversize body before buffering any of it.
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
    raw = await request.read()
    if not raw.strip():
        return None
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
    metadata = [("x-request-id", request[_TRACE])]
    for header, key in _FORWARDED_HEADERS.items():
        value = request.headers.get(header)
        if value is None:
            continue
        if not _metadata_safe(value):
            raise _bad_request("INVALID_HEADER", header, "must be printable ASCII")
        metadata.append((key, value))
    return metadata


def _handler_for(channel: grpc.aio.Channel, route: Route) -> Handler:
    call = channel.unary_unary(
        route.method_full_path,
        request_serializer=route.request_cls.SerializeToString,
        response_deserializer=route.response_cls.FromString,
    )
    response_desc = descriptor_of(route.response_cls)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await _read_json(request) if route.body else None
        if route.body == "*" and body is not None and not isinstance(body, dict):
            raise _bad_request("INVALID_BODY", "body", "expected a JSON object")
        message = build_request(route, body, request.match_info, request.query.items())
        reply = await call(message, metadata=_metadata(request))
        payload = success_body(route.success_code, to_json(reply), response_desc, request[_TRACE])
        return web.json_response(payload, status=route.success_code)

    return handle


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("x-request-id", "")
    usable = given and len(given) <= MAX_REQUEST_ID and _metadata_safe(given)
    traceid = given if usable else uuid.uuid4().hex
    request[_TRACE] = traceid
    try:
        response = await handler(request)
    except GatewayError as exc:
        response = _render(exc, traceid)
    except JsonMappingError as exc:
        response = _render(_bad_request("VALIDATION_FAILED", exc.field, exc.description), traceid)
    except grpc.aio.AioRpcError as exc:
        error = error_from_status(exc.code(), exc.details() or "", exc.trailing_metadata())
        response = _render(error, traceid)
    except web.HTTPException as exc:
        response = _render(_from_http_exception(exc), traceid)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:
        # Routes outside the gRPC API (provider callbacks) reach the store too:
        # its outages get the same status as through the API.
        status = store_fault_status(exc)
        if status is not None:
            log.warning("%s failed, the store is unavailable: %r", request.path, exc)
            error = error_from_status(status.code, status.details, status.trailing_metadata)
        else:
            log.exception("unhandled error in REST gateway", extra={"traceid": traceid})
            error = GatewayError(500, "INTERNAL", "internal error", "INTERNAL")
        response = _render(error, traceid)
    response.headers["X-Request-Id"] = traceid
    return response


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
