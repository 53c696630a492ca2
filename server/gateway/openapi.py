"""OpenAPI 3.1 for the REST façade, generated from the same proto descriptors and
``google.api.http`` annotations the route table is built from.

Only the few routes that do not come from a proto (health, provider callbacks,
one-click unsubscribe and this document itself) are described by hand, in
``EXTRA_ROUTES``. The document is built from the app's route list when first
asked for, so it cannot drift from what the app serves.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from cim.v1 import annotations_pb2
from server.api.field_guard import IDEMPOTENCY_FIELD, MAX_IDEMPOTENCY_KEY, WEBHOOKS, number_range
from server.api.verify import VERIFY_TOKEN_HEADER

from .app import MAX_REQUEST_ID
from .jsonmap import descriptor_of, enum_public_name, enum_type, message_type
from .routes import Route

__all__ = [
    "DOCS_ASSETS_ENV",
    "EXTRA_ROUTES",
    "add_docs_routes",
    "build_openapi",
    "default_assets_dir",
]

OPENAPI_VERSION = "3.1.0"
DOCS_ASSETS_ENV = "CIMHUB_DOCS_ASSETS"
_SPEC_KEY = web.AppKey("cim_openapi_spec", dict)
_ASSETS_KEY = web.AppKey("cim_docs_assets", str)
_FD = FieldDescriptor
_INT32 = {_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32}
_UINT32 = {_FD.TYPE_UINT32, _FD.TYPE_FIXED32}
_INT64 = {_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64}
_UINT64 = {_FD.TYPE_UINT64, _FD.TYPE_FIXED64}
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
# Files of swagger-ui-dist that the docs page loads.
_ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)
_OPEN: list[dict[str, list[str]]] = []

_ERROR_REF = {"$ref": "#/components/schemas/ApiErrorResponse"}


def _json(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def _envelope_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ERROR_REF)}


# Routes that have no proto behind them: (method, path) -> operation.
EXTRA_ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/healthz"): {
        "operationId": "Healthz",
        "summary": "Liveness: SERVING while the process runs, 503 NOT_SERVING while stopping.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {
                "description": "Serving",
                "content": _json(
                    {
                        "type": "object",
                        "properties": {"status": {"type": "string", "enum": ["SERVING"]}},
                        "required": ["status"],
                    }
                ),
            },
            "503": {"description": "Not serving"},
        },
    },
    ("HEAD", "/healthz"): {
        "operationId": "HealthzHead",
        "summary": "Liveness without a body.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {"200": {"description": "Serving"}, "503": {"description": "Not serving"}},
    },
    ("GET", "/readyz"): {
        "operationId": "Readyz",
        "summary": "Readiness: 503 NOT_SERVING while the database is unreachable or stopping.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {
                "description": "Ready for traffic",
                "content": _json(
                    {
                        "type": "object",
                        "properties": {"status": {"type": "string", "enum": ["SERVING"]}},
                        "required": ["status"],
                    }
                ),
            },
            "503": {"description": "Not ready: send traffic elsewhere"},
        },
    },
    ("HEAD", "/readyz"): {
        "operationId": "ReadyzHead",
        "summary": "Readiness without a body.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
    },
    ("GET", "/callbacks/{channel_id}"): {
        "operationId": "ProviderCallbackGet",
        "summary": "Provider verification handshakes (e.g. WhatsApp hub.challenge).",
        "description": "Called by messaging providers, not by API clients; the channel's "
        "adapter checks the provider's own signature or verify token.",
        "tags": ["Provider callbacks"],
        "security": _OPEN,
        "parameters": [
            {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": "Accepted by the channel's adapter"},
            "403": {"description": "Signature or token refused"},
            "404": {"description": "No such channel, or it takes no callbacks"},
        },
    },
    ("POST", "/callbacks/{channel_id}"): {
        "operationId": "ProviderCallbackPost",
        "summary": "Provider delivery receipts and inbound messages.",
        "description": "Called by messaging providers, not by API clients; the body is the "
        "provider's own format.",
        "tags": ["Provider callbacks"],
        "security": _OPEN,
        "parameters": [
            {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "requestBody": {"content": {"*/*": {"schema": {}}}},
        "responses": {
            "200": {"description": "Accepted by the channel's adapter"},
            "403": {"description": "Signature refused"},
            "404": {"description": "No such channel, or it takes no callbacks"},
        },
    },
    ("GET", "/unsubscribe/{token}"): {
        "operationId": "UnsubscribePage",
        "summary": "The page an email's unsubscribe link opens; it changes nothing.",
        "description": "Link scanners follow GETs, so only the POST unsubscribes.",
        "tags": ["Consent"],
        "security": _OPEN,
        "parameters": [
            {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {"200": {"description": "A page whose button makes the POST"}},
    },
    ("POST", "/unsubscribe/{token}"): {
        "operationId": "UnsubscribeOneClick",
        "summary": "RFC 8058 one-click unsubscribe: records the opt-out the signed token names.",
        "description": "Called by mail clients with List-Unsubscribe=One-Click; the token, "
        "signed by the hub, is the only credential.",
        "tags": ["Consent"],
        "security": _OPEN,
        "parameters": [
            {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "requestBody": {"content": {"*/*": {"schema": {}}}},
        "responses": {
            "200": {"description": "Opted out"},
            "403": {"description": "Not a token this hub signed"},
        },
    },
    ("GET", "/metrics"): {
        "operationId": "Metrics",
        "summary": "Prometheus metrics of this replica, in the text exposition format.",
        "description": "Open unless the hub is started with CIMHUB_METRICS_TOKEN; then it "
        "wants `Authorization: Bearer <token>` (that token, not an API key or JWT).",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {"description": "Metrics", "content": {"text/plain": {"schema": {}}}},
            "401": {"description": "CIMHUB_METRICS_TOKEN is set and was not presented"},
        },
    },
    ("GET", "/openapi.json"): {
        "operationId": "OpenApi",
        "summary": "This document.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}},
    },
    ("GET", "/docs"): {
        "operationId": "Docs",
        "summary": "Interactive API documentation (Swagger UI) for this document.",
        "tags": ["Operations"],
        "security": _OPEN,
        "responses": {
            "200": {"description": "HTML page", "content": {"text/html": {"schema": {}}}},
            "503": {"description": "Documentation assets are not installed"},
        },
    },
    ("GET", "/docs/{asset}"): {
        "operationId": "DocsAsset",
        "summary": "A static file of the documentation page.",
        "tags": ["Operations"],
        "security": _OPEN,
        "parameters": [
            {
                "name": "asset",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": list(_ASSETS)},
            }
        ],
        "responses": {
            "200": {"description": "The file", "content": {"*/*": {"schema": {}}}},
            "404": {"description": "Not one of the page's files"},
            "503": {"description": "Documentation assets are not installed"},
        },
    },
}


# -- JSON Schema from message descriptors ---------------------------------------------


class _Schemas:
    """Collects one component schema per message reached, so recursion is a $ref."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, desc: Descriptor) -> dict[str, Any]:
        wkt = _well_known(desc)
        if wkt is not None:
            return wkt
        name = desc.full_name
        if name not in self.components:
            self.components[name] = {}  # placeholder: a cycle finds the name already taken
            self.components[name] = self._message(desc)
        return {"$ref": f"#/components/schemas/{name}"}

    def _message(self, desc: Descriptor, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
        fields = [f for f in desc.fields if f.name not in omit]
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.json_name: self.field(f) for f in fields},
            # The façade refuses unknown fields.
            "additionalProperties": False,
        }
        required = [f.json_name for f in fields if is_required(f)]
        if required:
            schema["required"] = required
        return schema

    def inline(self, desc: Descriptor, omit: frozenset[str]) -> dict[str, Any]:
        """A request body without the fields the URL already carries."""
        if not omit:
            return self.ref(desc)
        return self._message(desc, omit)

    def field(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.type == _FD.TYPE_MESSAGE and message_type(f).GetOptions().map_entry:
            value = message_type(f).fields_by_name["value"]
            values = self.single(value)
            schema: dict[str, Any] = {"type": "object", "additionalProperties": values}
            limit = f.GetOptions().Extensions[annotations_pb2.max_length]
            if limit:
                # The map's limit holds for its keys and its text values alike.
                schema["propertyNames"] = {"maxLength": limit}
                if value.type == _FD.TYPE_STRING:
                    values["maxLength"] = limit
            return schema
        if f.is_repeated:
            return {"type": "array", "items": self.single(f)}
        return self.single(f)

    def single(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.type == _FD.TYPE_MESSAGE:
            return self.ref(message_type(f))
        schema = scalar_schema(f)
        low, high = number_range(f)
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
        limit = f.GetOptions().Extensions[annotations_pb2.max_length]
        if limit:
            schema["maxLength"] = limit
        pattern = f.GetOptions().Extensions[annotations_pb2.pattern]
        if pattern:
            schema["pattern"] = pattern
        if f.GetOptions().Extensions[annotations_pb2.fetched_url]:
            # Fetched by the hub or a provider: it must pass the outbound guard.
            schema["format"] = "uri"
        if is_required(f) and f.type == _FD.TYPE_STRING:
            # Required text must also be non-empty: proto3 cannot tell "" from unset.
            schema["minLength"] = 1
        return schema


def is_required(f: FieldDescriptor) -> bool:
    behaviors = f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviors


def scalar_schema(f: FieldDescriptor) -> dict[str, Any]:
    t = f.type
    if t == _FD.TYPE_STRING:
        # The public API's clients send numbers where strings are declared; the
        # façade turns them into their text.
        return {"type": ["string", "number"]}
    if t == _FD.TYPE_BOOL:
        return {"type": "boolean"}
    if t in _INT32:
        return {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
    if t in _UINT32:
        return {"type": "integer", "format": "int32", "minimum": 0, "maximum": 2**32 - 1}
    if t in _INT64:
        return {"type": "integer", "format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}
    if t in _UINT64:
        return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**64 - 1}
    if t in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
        return {"type": "number"}
    if t == _FD.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    if t == _FD.TYPE_ENUM:
        return enum_schema(enum_type(f))
    return {}


def enum_schema(enum: EnumDescriptor) -> dict[str, Any]:
    names = [
        str(enum_public_name(enum, v.number))
        for v in enum.values
        if not v.name.endswith("_UNSPECIFIED")
    ]
    return {"type": "string", "enum": names}


def _well_known(desc: Descriptor) -> dict[str, Any] | None:
    if desc.file.package != "google.protobuf":
        return None
    return {
        "google.protobuf.Struct": {"type": "object"},
        "google.protobuf.Value": {},
        "google.protobuf.ListValue": {"type": "array"},
        "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
        "google.protobuf.Duration": {"type": "string"},
        "google.protobuf.FieldMask": {"type": "string"},
        "google.protobuf.Empty": {"type": "object"},
    }.get(desc.full_name, {})


# -- operations -------------------------------------------------------------------------


def path_shape(template: str) -> str:
    """``/a/{b.c=x/*}`` -> ``/a/{}``: two templates of one shape are one OpenAPI path."""
    return _VARIABLE.sub("{}", template)


def openapi_path(template: str, names: list[str]) -> str:
    """The template with its variables named ``names``, in order."""
    given = iter(names)
    return _VARIABLE.sub(lambda _m: "{" + next(given) + "}", template)


def _query_parameters(
    route: Route, schemas: _Schemas, bound: frozenset[str]
) -> list[dict[str, Any]]:
    if route.body == "*":
        return []
    params = []
    for f in descriptor_of(route.request_cls).fields:
        if f.name in bound or f.type == _FD.TYPE_MESSAGE:
            continue
        schema = schemas.field(f)
        param: dict[str, Any] = {"name": f.json_name, "in": "query", "schema": schema}
        if is_required(f):
            param["required"] = True
        if f.is_repeated:
            param.update(style="form", explode=True)
        params.append(param)
    return params


def _path_parameters(route: Route, schemas: _Schemas, names: list[str]) -> list[dict[str, Any]]:
    params = []
    for p, name in zip(route.path_params, names, strict=True):
        desc = descriptor_of(route.request_cls)
        field: FieldDescriptor | None = None
        for part in p.field_path.split("."):
            field = desc.fields_by_name[part]
            if field.type == _FD.TYPE_MESSAGE:
                desc = message_type(field)
        assert field is not None
        schema = dict(schemas.single(field))
        if schema.get("type") == ["string", "number"]:
            schema["type"] = "string"
            schema.setdefault("minLength", 1)
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _request_body(route: Route, schemas: _Schemas) -> dict[str, Any] | None:
    if not route.body:
        return None
    desc = descriptor_of(route.request_cls)
    if route.body == "*":
        top = frozenset(p.field_path for p in route.path_params if "." not in p.field_path)
        schema = schemas.inline(desc, top)
    else:
        field = desc.fields_by_name[route.body]
        # Fields of the body that the URL carries (channel.channel_id) are not in it.
        prefix = f"{route.body}."
        inner = frozenset(
            p.field_path.removeprefix(prefix)
            for p in route.path_params
            if p.field_path.startswith(prefix) and "." not in p.field_path.removeprefix(prefix)
        )
        if inner and field.type == _FD.TYPE_MESSAGE:
            schema = schemas.inline(message_type(field), inner)
        else:
            schema = schemas.single(field)
    return {"required": True, "content": _json(schema)}


def _success_schema(route: Route, schemas: _Schemas) -> dict[str, Any]:
    desc = descriptor_of(route.response_cls)
    base: dict[str, Any] = {
        "status": {"type": "integer"},
        "statusKey": {"type": "string"},
        "message": {"type": "string"},
        "timestamp": {"type": "integer", "format": "int64"},
        "traceid": {"type": "string"},
    }
    results = desc.fields_by_name.get("results")
    if results is not None and results.is_repeated:
        meta = {f.json_name: schemas.field(f) for f in desc.fields if f.name != "results"}
        props = {
            **base,
            "results": {"type": "array", "items": schemas.single(results)},
            "meta": {"type": "object", "properties": meta},
        }
        required = ["status", "statusKey", "results", "meta", "timestamp", "traceid"]
    else:
        props = {**base, "data": schemas.ref(desc)}
        required = ["status", "statusKey", "data", "timestamp", "traceid"]
    return {"type": "object", "properties": props, "required": required}


def _operation(
    route: Route, schemas: _Schemas, operation_id: str, names: list[str]
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
            {"$ref": "#/components/parameters/IdempotencyKey"},
            {"$ref": "#/components/parameters/RequestId"},
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
                "description": "Server-Sent Events (or a WebSocket on upgrade); each event's "
                "data is one StreamNotificationsResponse as JSON.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        }
    else:
        op["responses"] = {
            code: {"description": "Success", "content": _json(_success_schema(route, schemas))}
        }
    op["responses"].update(
        {
            "400": _envelope_error("Invalid request; errors[] name each field by JSON path"),
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


def _components(schemas: _Schemas) -> dict[str, Any]:
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
            "ApiFieldError": field_error,
            "ApiErrorResponse": error,
        },
        "parameters": {
            "IdempotencyKey": {
                "name": IDEMPOTENCY_FIELD,
                "in": "header",
                "required": False,
                "description": "Makes retries of a mutation safe for 24 hours; a longer "
                "key is refused with 400.",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
            },
            "RequestId": {
                "name": "x-request-id",
                "in": "header",
                "required": False,
                "description": "Trace id echoed as traceid; one is made up when absent, "
                "longer than this or not printable ASCII.",
                "schema": {"type": "string", "maxLength": MAX_REQUEST_ID},
            },
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


def build_openapi(
    routes: list[Route], extra: dict[tuple[str, str], dict[str, Any]] | None = None
) -> dict[str, Any]:
    schemas = _Schemas()
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


# -- serving ----------------------------------------------------------------------------


def default_assets_dir() -> str:
    """$CIMHUB_DOCS_ASSETS, else swagger-ui-dist as `make node-tools` installs it
    (npm ci from tools/node/package-lock.json)."""
    configured = os.environ.get(DOCS_ASSETS_ENV, "")
    if configured:
        return configured
    root = Path(__file__).resolve().parents[2]
    return str(root / "tools" / "node" / "node_modules" / "swagger-ui-dist")


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>CIM Hub API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout"
});
</script>
</body>
</html>
"""


def add_docs_routes(
    app: web.Application, routes: list[Route], *, assets_dir: str | None = None
) -> None:
    """Serve /openapi.json and /docs. Call after every other route is added."""
    app[_ASSETS_KEY] = assets_dir or default_assets_dir()
    # Optional routes (/metrics can be switched off) are described when served.
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    own = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/{asset}")}
    extra = {k: op for k, op in EXTRA_ROUTES.items() if k in served or k in own}
    spec_text = json.dumps(build_openapi(routes, extra))

    async def spec(_request: web.Request) -> web.Response:
        return web.Response(text=spec_text, content_type="application/json")

    async def page(request: web.Request) -> web.Response:
        if not _assets_present(request.app[_ASSETS_KEY]):
            return _no_assets()
        return web.Response(text=_PAGE, content_type="text/html")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["asset"]
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        folder = request.app[_ASSETS_KEY]
        if not _assets_present(folder):
            return _no_assets()
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.FileResponse(Path(folder) / name, headers={"Content-Type": kind})

    app.router.add_route("GET", "/openapi.json", spec)
    app.router.add_route("GET", "/docs", page)
    app.router.add_route("GET", "/docs/{asset}", asset)


def _assets_present(folder: str) -> bool:
    return (Path(folder) / "swagger-ui-bundle.js").is_file()


def _no_assets() -> web.Response:
    return web.Response(
        status=503,
        text="Documentation assets are not installed; run `make docs-assets`.\n",
        content_type="text/plain",
    )
