"""OpenAPI 3.1 for the REST façade, generated from the same proto descriptors and
``google.api.http`` annotations the route table is built from.

Only the few routes that do not come from a proto (health, provider callbacks,
one-click unsubscribe and this document itself) are described by hand, in
``extra_routes.py``. Every field's schema comes from the facts of
``server.api.contract``, the ones the JSON mapping and the field guard enforce.
``docs.py`` builds the document from the app's route list when the app is
assembled, so it cannot drift from what the app serves.
"""

from __future__ import annotations

import re
from typing import Any

from server.api.contract import FieldFacts, Kind, MessageFacts, descriptor_of, message_facts
from server.api.field_guard import IDEMPOTENCY_FIELD, MAX_IDEMPOTENCY_KEY, WEBHOOKS
from server.api.verify import VERIFY_TOKEN_HEADER

from .app import MAX_HEADER_VALUE, MAX_REQUEST_ID
from .extra_routes import EXTRA_ROUTES, json_content
from .routes import Route
from .schemas import JSON_VALUE, PRINTABLE_ASCII, Schemas, json_value_schema

__all__ = ["build_openapi"]

OPENAPI_VERSION = "3.1.0"
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_ERROR_REF = {"$ref": "#/components/schemas/ApiErrorResponse"}


_HEADER_REFS = [
    {"$ref": f"#/components/parameters/{name}"}
    for name in ("IdempotencyKey", "RequestId", "Traceparent", "Tracestate")
]
# Every answer names the trace it belongs to.
_ECHOED = {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}}


def _envelope_error(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _ECHOED, "content": json_content(_ERROR_REF)}


# A request that is not valid HTTP (a request line past 8190 bytes, a NUL in a
# header) is refused by the HTTP server itself, before any route, in plain text.
_BAD_REQUEST = _envelope_error(
    "Invalid request; errors[] name each field by JSON path. A request that is not "
    "valid HTTP gets a plain-text 400."
)
_BAD_REQUEST["content"] = {**_BAD_REQUEST["content"], "text/plain": {"schema": {"type": "string"}}}


# -- operations -------------------------------------------------------------------------


def path_shape(template: str) -> str:
    """``/a/{b.c=x/*}`` -> ``/a/{}``: two templates of one shape are one OpenAPI path."""
    return _VARIABLE.sub("{}", template)


def openapi_path(template: str, names: list[str]) -> str:
    """The template with its variables named ``names``, in order."""
    given = iter(names)
    return _VARIABLE.sub(lambda _m: "{" + next(given) + "}", template)


def _request_facts(route: Route) -> MessageFacts:
    return message_facts(descriptor_of(route.request_cls))


def _query_parameters(
    route: Route, schemas: Schemas, bound: frozenset[str]
) -> list[dict[str, Any]]:
    if route.body == "*":
        return []
    params = []
    for f in _request_facts(route).fields:
        if f.name in bound or f.message is not None or f.kind is Kind.MAP:
            continue
        schema = schemas.parameter(f)
        param: dict[str, Any] = {"name": f.json_name, "in": "query", "schema": schema}
        if f.required:
            param["required"] = True
        if f.repeated:
            items: dict[str, Any] = {"type": "array", "items": schema}
            if f.max_items:
                items["maxItems"] = f.max_items
            param.update(schema=items, style="form", explode=True)
        params.append(param)
    return params


def _path_field(route: Route, field_path: str) -> FieldFacts:
    facts = _request_facts(route)
    for part in field_path.split("."):
        field = facts.by_key[part]
        if field.message is not None:
            facts = field.child()
    return field


def _path_parameters(route: Route, schemas: Schemas, names: list[str]) -> list[dict[str, Any]]:
    params = []
    for p, name in zip(route.path_params, names, strict=True):
        schema = schemas.parameter(_path_field(route, p.field_path))
        if schema.get("type") == "string":
            # A path segment is never empty.
            schema.setdefault("minLength", 1)
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _request_body(route: Route, schemas: Schemas) -> dict[str, Any] | None:
    if not route.body:
        return None
    facts = _request_facts(route)
    if route.body == "*":
        top = frozenset(p.field_path for p in route.path_params if "." not in p.field_path)
        schema = schemas.message(facts, top) if top else schemas.ref(facts)
    else:
        field = facts.by_key[route.body]
        # Fields of the body that the URL carries (channel.channel_id) are not in it.
        prefix = f"{route.body}."
        inner = frozenset(
            p.field_path.removeprefix(prefix)
            for p in route.path_params
            if p.field_path.startswith(prefix) and "." not in p.field_path.removeprefix(prefix)
        )
        if inner and field.kind is Kind.MESSAGE:
            schema = schemas.message(field.child(), inner)
        else:
            schema = schemas.single(field)
    # Without its body a call is refused, unless the method says it may be left out.
    return {"required": not route.body_optional, "content": json_content(schema)}


def _success_schema(route: Route, schemas: Schemas) -> dict[str, Any]:
    facts = message_facts(descriptor_of(route.response_cls))
    base: dict[str, Any] = {
        "status": {"type": "integer"},
        "statusKey": {"type": "string"},
        "message": {"type": "string"},
        "timestamp": {"type": "integer", "format": "int64"},
        "traceid": {"type": "string"},
    }
    results = facts.by_key.get("results")
    if results is not None and results.repeated:
        meta = {f.json_name: schemas.field(f) for f in facts.fields if f.name != "results"}
        props = {
            **base,
            "results": {"type": "array", "items": schemas.single(results)},
            "meta": {"type": "object", "properties": meta},
        }
        required = ["status", "statusKey", "results", "meta", "timestamp", "traceid"]
    else:
        props = {**base, "data": schemas.ref(facts)}
        required = ["status", "statusKey", "data", "timestamp", "traceid"]
    return {"type": "object", "properties": props, "required": required}


def _event_schema(route: Route, schemas: Schemas) -> dict[str, Any]:
    """One Server-Sent Event of a streaming route: a kind per oneof member, and errors."""
    descriptor = descriptor_of(route.response_cls)
    facts = {f.name: f for f in message_facts(descriptor).fields}
    kinds = [(f.name, schemas.single(facts[f.name])) for o in descriptor.oneofs for f in o.fields]
    kinds.append(("error", _ERROR_REF))
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": name},
                    "id": {"type": "string"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": data,
                    },
                },
            }
            for name, data in kinds
        ]
    }


def _operation(
    route: Route, schemas: Schemas, operation_id: str, names: list[str]
) -> dict[str, Any]:
    bound = frozenset(p.field_path.split(".")[0] for p in route.path_params)
    if route.body and route.body != "*":
        bound |= {route.body}
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [route.method.containing_service.name],
        "summary": _summary(route),
        "parameters": [
            *_path_parameters(route, schemas, names),
            *_query_parameters(route, schemas, bound),
            *(_HEADER_REFS),
        ],
    }
    body = _request_body(route, schemas)
    if body is not None:
        op["requestBody"] = body
    if route.method_full_path in WEBHOOKS:
        # Webhooks are called by the messaging platform with the shared token
        # instead of an API key.
        op["security"] = [{"verifyToken": []}]
    code = str(route.success_code)
    if route.streaming:
        op["responses"] = {
            "200": {
                "description": "Server-Sent Events (or a WebSocket on upgrade). An event is "
                "named after the member of the response's oneof it carries, and its data is "
                "that member as JSON; its id is the cursor to resume after. A failure ends "
                "the stream with an `error` event holding the error envelope.",
                # Before OpenAPI 3.2, a stream's schema describes one event.
                "content": {"text/event-stream": {"schema": _event_schema(route, schemas)}},
            }
        }
    else:
        op["responses"] = {
            code: {
                "description": "Success",
                "headers": _ECHOED,
                "content": json_content(_success_schema(route, schemas)),
            }
        }
    op["responses"].update(
        {
            "400": _BAD_REQUEST,
            "401": _envelope_error("Missing or invalid credentials"),
            "403": _envelope_error("Not allowed"),
            "404": _envelope_error("Not found"),
            "409": _envelope_error("Conflict"),
            "429": _envelope_error("Rate limited"),
            "default": _envelope_error("Error"),
        }
    )
    return op


def _summary(route: Route) -> str:
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", route.method.name)
    return words[0] + words[1:].lower()


def _components(schemas: Schemas) -> dict[str, Any]:
    field_error = {
        "type": "object",
        "properties": {
            "field": {"type": "string", "description": "JSON path, e.g. to[0].msisdn[3]"},
            "code": {"type": "string"},
            "description": {"type": "string"},
        },
        "required": ["field", "code", "description"],
    }
    error = {
        "type": "object",
        "properties": {
            "status": {"type": "integer"},
            "statusKey": {"type": "string"},
            "message": {"type": "string"},
            "messageKey": {"type": "string", "description": "UPPER_SNAKE reason"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ApiFieldError"}},
            "timestamp": {"type": "integer", "format": "int64"},
            "traceid": {"type": "string"},
        },
        "required": ["status", "statusKey", "message", "messageKey", "errors", "traceid"],
    }
    return {
        "schemas": {
            **dict(sorted(schemas.components.items())),
            JSON_VALUE: json_value_schema(),
            "ApiFieldError": field_error,
            "ApiErrorResponse": error,
        },
        "parameters": {
            "IdempotencyKey": _header(
                IDEMPOTENCY_FIELD,
                "Makes retries of a mutation safe for 24 hours; a longer key is refused "
                "with 400. Empty counts as none.",
                maxLength=MAX_IDEMPOTENCY_KEY,
            ),
            "RequestId": {
                "name": "x-request-id",
                "in": "header",
                "required": False,
                "description": "Trace id echoed as traceid and X-Request-Id; one is made up "
                f"when it is absent, longer than {MAX_REQUEST_ID} characters or not printable "
                "ASCII, so no value the HTTP server reads is refused.",
                "schema": {"type": "string", "maxLength": MAX_HEADER_VALUE},
            },
            "Traceparent": _header(
                "traceparent", "W3C trace context the call continues; ignored when malformed."
            ),
            "Tracestate": _header("tracestate", "W3C trace state, passed along with traceparent."),
        },
        "headers": {
            "RequestId": {
                "description": "The caller's x-request-id when usable, else one made up.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_REQUEST_ID,
                    "pattern": PRINTABLE_ASCII,
                },
            }
        },
        "securitySchemes": {
            "apiId": {"type": "apiKey", "in": "header", "name": "x-api-id"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "verifyToken": {
                "type": "apiKey",
                "in": "header",
                "name": VERIFY_TOKEN_HEADER,
                "description": "The shared token of the inbound webhooks.",
            },
        },
    }


def _header(name: str, description: str, **limits: int) -> dict[str, Any]:
    """A header the façade passes on as gRPC metadata, which takes printable ASCII only."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description + " Printable ASCII only.",
        "schema": {
            "type": "string",
            "maxLength": MAX_HEADER_VALUE,
            "pattern": PRINTABLE_ASCII,
            **limits,
        },
    }


def build_openapi(
    routes: list[Route], extra: dict[tuple[str, str], dict[str, Any]] | None = None
) -> dict[str, Any]:
    schemas = Schemas()
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    # OpenAPI treats /a/{x} and /a/{y} as one path, so every route of a shape
    # takes the variable names of the first; dots would read as attribute access
    # in many clients' URL templates.
    names_of: dict[str, list[str]] = {}
    for route in routes:
        names = names_of.setdefault(
            path_shape(route.path_template),
            [p.field_path.replace(".", "_") for p in route.path_params],
        )
        # An RPC with additional bindings has one operation per binding.
        operation_id, n = route.method.name, 1
        while operation_id in used:
            n += 1
            operation_id = f"{route.method.name}{n}"
        used.add(operation_id)
        item = paths.setdefault(openapi_path(route.path_template, names), {})
        item[route.http_method.lower()] = _operation(route, schemas, operation_id, names)
    for (method, path), op in (EXTRA_ROUTES if extra is None else extra).items():
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": OPENAPI_VERSION,
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "CIM Hub",
            "version": "1.0",
            "description": "REST façade of the CIM Hub gRPC services. Every answer is "
            "wrapped in the ApiResponse envelope: data for single results, results and "
            "meta for lists.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"apiId": [], "apiKey": []}, {"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": _components(schemas),
    }
