"""The REST route table, read from the ``google.api.http`` annotations of cim.v1.

Nothing here is written per endpoint: adding an annotated RPC to a proto is all it
takes to publish it, and the OpenAPI generator reads the same ``Route`` list.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.api import annotations_pb2 as google_annotations
from google.api import http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from cim.v1 import annotations_pb2
from server.api.contract import FieldFacts, Kind, MessageFacts, descriptor_of, message_facts

from .jsonmap import JsonMappingError, parse

__all__ = ["PathParam", "Route", "build_request", "build_routes", "discover_services"]

_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
_PATTERNS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True, slots=True)
class PathParam:
    """A URL template variable bound to a (possibly nested) request field."""

    field_path: str  # proto field names, dotted: "message_id"
    var_name: str  # the aiohttp match_info key


@dataclass(frozen=True, slots=True)
class Route:
    http_method: str
    path_template: str
    aiohttp_path: str
    method_full_path: str  # "/cim.v1.MessagingService/SendMessage"
    request_cls: type[Message]
    response_cls: type[Message]
    body: str  # "*", a request field name, or "" for no body
    success_code: int
    path_params: tuple[PathParam, ...]
    method: MethodDescriptor
    # Server-streaming RPCs are served as Server-Sent Events or a WebSocket.
    streaming: bool = False
    # The body may be left out; otherwise a call without it is refused.
    body_optional: bool = False


def discover_services(package: ModuleType | None = None) -> list[Any]:
    """Every service declared in the ``*_pb2`` modules of ``package`` (cim.v1)."""
    root = package if package is not None else importlib.import_module("cim.v1")
    services = []
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{root.__name__}.{info.name}")
        services.extend(module.DESCRIPTOR.services_by_name.values())
    return services


def build_routes(services: Iterable[Any] | None = None) -> list[Route]:
    routes: list[Route] = []
    for service in discover_services() if services is None else services:
        for method in service.methods:
            # Client streams have no HTTP mapping; server streams become SSE/WebSocket.
            if method.client_streaming:
                continue
            options = method.GetOptions()
            if not options.HasExtension(google_annotations.http):
                continue
            rule = options.Extensions[google_annotations.http]
            success = options.Extensions[annotations_pb2.http_success_code] or 200
            optional = options.Extensions[annotations_pb2.http_body_optional]
            for binding in (rule, *rule.additional_bindings):
                route = _route_for(method, binding, success, optional)
                if route is not None:
                    routes.append(route)
    return routes


def _route_for(
    method: MethodDescriptor, rule: http_pb2.HttpRule, success: int, body_optional: bool
) -> Route | None:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        return None
    if pattern == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    elif pattern in _PATTERNS:
        verb, template = pattern.upper(), getattr(rule, pattern)
    else:
        return None
    aiohttp_path, params = _convert_template(template)
    return Route(
        http_method=verb,
        path_template=template,
        aiohttp_path=aiohttp_path,
        method_full_path=f"/{method.containing_service.full_name}/{method.name}",
        request_cls=message_factory.GetMessageClass(method.input_type),
        response_cls=message_factory.GetMessageClass(method.output_type),
        body=rule.body,
        success_code=success,
        path_params=params,
        method=method,
        streaming=method.server_streaming,
        body_optional=body_optional,
    )


def _convert_template(template: str) -> tuple[str, tuple[PathParam, ...]]:
    params: list[PathParam] = []

    def replace(found: re.Match[str]) -> str:
        field_path, pattern = found.group(1).strip(), found.group(2)
        # aiohttp names must be identifiers; "a.b" cannot be one.
        var_name = field_path.replace(".", "__")
        params.append(PathParam(field_path, var_name))
        if pattern in (None, "*"):
            return "{" + var_name + "}"
        return "{" + var_name + ":" + _glob_to_regex(pattern) + "}"

    return _VARIABLE.sub(replace, template), tuple(params)


def _glob_to_regex(pattern: str) -> str:
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(".+")
        elif segment == "*":
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)


# -- HTTP request -> proto request -----------------------------------------------------


def build_request(
    route: Route,
    body: Any,
    path_values: Mapping[str, str],
    query: Iterable[tuple[str, str]],
) -> Message:
    """Merge body, query and path into one JSON document and parse it once, so all
    three get the same coercions and the same error paths."""
    facts = message_facts(descriptor_of(route.request_cls))
    query = list(query)
    if route.body == "*":
        if query:
            raise JsonMappingError(query[0][0], "unknown query parameter; send it in the body")
        doc: dict[str, Any] = dict(body or {})
    else:
        doc = _query_document(facts, query, route)
        if route.body and body is not None:
            doc[facts.by_key[route.body].json_name] = body
    for param in route.path_params:
        _set_path(doc, facts, param.field_path, path_values[param.var_name])
    return parse(doc, route.request_cls)


def _query_document(
    facts: MessageFacts, query: list[tuple[str, str]], route: Route
) -> dict[str, Any]:
    bound = {p.field_path for p in route.path_params} | ({route.body} if route.body else set())
    doc: dict[str, Any] = {}
    for key, raw in query:
        fields = _resolve(facts, key)
        if fields is None or ".".join(f.name for f in fields) in bound:
            raise JsonMappingError(key, "unknown query parameter")
        leaf = fields[-1]
        if leaf.message is not None or leaf.kind is Kind.MAP:
            raise JsonMappingError(key, "cannot be set from a query parameter")
        target = doc
        for field in fields[:-1]:
            target = target.setdefault(field.json_name, {})
        value: Any = raw
        if leaf.kind is Kind.BOOL and raw in ("1", "0"):
            value = raw == "1"
        if leaf.repeated:
            target.setdefault(leaf.json_name, []).append(value)
        elif leaf.json_name in target:
            raise JsonMappingError(key, "given more than once")
        else:
            target[leaf.json_name] = value
    return doc


def _resolve(facts: MessageFacts, dotted: str) -> list[FieldFacts] | None:
    """Fields along ``a.b.c`` by json or proto name; None when the path is not there."""
    fields: list[FieldFacts] = []
    current: MessageFacts | None = facts
    for name in dotted.split("."):
        if current is None or current.kind is not Kind.MESSAGE:
            return None
        field = current.by_key.get(name)
        if field is None or (fields and fields[-1].repeated):
            return None
        fields.append(field)
        current = field.child() if field.message is not None else None
    return fields


def _set_path(doc: dict[str, Any], facts: MessageFacts, field_path: str, value: str) -> None:
    fields = _resolve(facts, field_path)
    if fields is None:  # the proto itself is wrong; surface it rather than guess
        raise JsonMappingError(field_path, "path variable does not name a request field")
    target = doc
    for field in fields[:-1]:
        nested = target.get(field.json_name)
        if not isinstance(nested, dict):
            nested = target[field.json_name] = {}
        target = nested
    # The URL is authoritative over a body copy of the same field.
    target.pop(fields[-1].name, None)
    target[fields[-1].json_name] = value
