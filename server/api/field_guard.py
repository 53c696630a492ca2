"""Checks every request's strings before its servicer sees them.

PostgreSQL refuses NUL in text and in jsonb, and refuses text longer than a
varchar column; either would surface as an internal error. This interceptor
applies the rules the protos declare (REQUIRED text, max_length, pattern,
minimum and maximum, max_items) and a NUL check to every string of every
request, including map keys and values and the text inside
google.protobuf.Struct, so SQLite and PostgreSQL refuse the same input with the
same INVALID_ARGUMENT. The ``idempotency-key`` metadata is stored too, so it is
held to its column's length.

What to check comes from the field facts of ``server.api.contract``, worked
out once per message type, the ones the OpenAPI document publishes; a type with
nothing to check anywhere below it costs one dictionary lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from server.api.contract import FREE_FORM, FieldFacts, Kind, descriptor_of, message_facts
from server.api.handlers import Behaviour, WrappingInterceptor, forward, rewrap
from server.domain.errors import FieldViolation, invalid
from server.domain.provider import CallbackResult

IDEMPOTENCY_HEADER = "idempotency-key"
# The public name of the header, as REST clients send it.
IDEMPOTENCY_FIELD = "Idempotency-Key"
# idempotency.key is String(256).
MAX_IDEMPOTENCY_KEY = 256
NUL = "\x00"
NUL_TEXT = "must not contain NUL characters"

UrlCheck = Callable[[str], "str | None"]


def _path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _text(field: FieldFacts, value: str, path: str) -> FieldViolation | None:
    if NUL in value:
        return FieldViolation(path, NUL_TEXT)
    if field.max_length and len(value) > field.max_length:
        return FieldViolation(path, f"at most {field.max_length} characters")
    return None


def _json_strings(value: Any, path: str) -> Iterator[FieldViolation]:
    """NULs in a Struct, Value or ListValue: jsonb refuses them in keys and text."""
    if isinstance(value, struct_pb2.Struct):
        for key, item in value.fields.items():
            if NUL in key:
                yield FieldViolation(path, NUL_TEXT)
            else:
                yield from _json_strings(item, f"{path}.{key}")
    elif isinstance(value, struct_pb2.ListValue):
        for i, item in enumerate(value.values):
            yield from _json_strings(item, f"{path}[{i}]")
    elif isinstance(value, struct_pb2.Value):
        kind = value.WhichOneof("kind")
        if kind == "string_value" and NUL in value.string_value:
            yield FieldViolation(path, NUL_TEXT)
        elif kind == "struct_value":
            yield from _json_strings(value.struct_value, path)
        elif kind == "list_value":
            yield from _json_strings(value.list_value, path)


def violations(
    message: Message, parent: str = "", skip: str = "", url_check: UrlCheck | None = None
) -> Iterator[FieldViolation]:
    """Every field of ``message`` that breaks its declared rule, and every string
    holding a NUL.

    REQUIRED is checked on text, as field_rules does. A REQUIRED message, list or
    enum is left to its servicer, whose refusal names every field missing at
    once (content or template, an activity's anchors), which a refusal made here
    would cut short.

    ``skip`` names a field whose content is reported without its own name (the
    REST body of a ``body: "field"`` route), as the servicers name it.
    ``url_check`` gives the outbound guard's refusal of a URL that will be fetched.
    """
    for field in message_facts(descriptor_of(message)).guarded:
        path = "" if field.name == skip else _path(parent, field.json_name)
        value = getattr(message, field.name)
        if field.kind is Kind.MAP:
            yield from _map(field, value, path, url_check)
        elif field.repeated:
            if field.max_items and len(value) > field.max_items:
                yield FieldViolation(path, f"at most {field.max_items} items")
            for i, item in enumerate(value):
                yield from _one(field, item, f"{path}[{i}]", url_check)
        elif field.kind is Kind.TEXT or field.kind is Kind.INT or message.HasField(field.name):
            yield from _one(field, value, path, url_check)


def _one(
    field: FieldFacts, value: Any, path: str, url_check: UrlCheck | None
) -> Iterator[FieldViolation]:
    """What is wrong with one value of ``field`` (one item of a list)."""
    kind = field.kind
    if kind is Kind.TEXT:
        if not value:
            if field.required and not field.repeated:
                yield FieldViolation(path, "required")
            return
        bad = _text(field, value, path) or _declared(field, value, path, url_check)
        if bad is not None:
            yield bad
    elif kind is Kind.INT:
        if field.minimum is not None and value < field.minimum:
            yield FieldViolation(path, f"must be at least {field.minimum}")
        elif field.maximum is not None and value > field.maximum:
            yield FieldViolation(path, f"must be at most {field.maximum}")
    elif kind in FREE_FORM:
        yield from _json_strings(value, path)
    else:
        yield from violations(value, path, url_check=url_check)


def _declared(
    field: FieldFacts, value: str, path: str, url_check: UrlCheck | None
) -> FieldViolation | None:
    if field.pattern and not field_pattern(field.pattern).search(value):
        return FieldViolation(path, f"must match {field.pattern}")
    if field.fetched and url_check is not None:
        refusal = url_check(value)
        return FieldViolation(path, refusal) if refusal else None
    return None


def _map(
    field: FieldFacts, entries: Any, path: str, url_check: UrlCheck | None
) -> Iterator[FieldViolation]:
    key, value_field = field.key, field.value
    assert key is not None and value_field is not None
    key_text = key.kind is Kind.TEXT
    for name, value in entries.items():
        if key_text and NUL in name:
            yield FieldViolation(path, NUL_TEXT)
            continue
        if key_text and field.max_length and len(name) > field.max_length:
            yield FieldViolation(path, f"keys at most {field.max_length} characters")
        else:
            yield from _one(value_field, value, f"{path}.{name}", url_check)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def field_pattern(pattern: str) -> re.Pattern[str]:
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        compiled = _PATTERNS[pattern] = re.compile(pattern)
    return compiled


# -- the interceptor -------------------------------------------------------------------

# Where the servicer names a body message's fields from that message, as the
# REST client (whose body it is) sees them: "channelId", not "channel.channelId".
BODY_ROOTS = {
    "/cim.v1.ConfigService/CreateChannel": "channel",
    "/cim.v1.ConfigService/UpdateChannel": "channel",
    "/cim.v1.ConfigService/CreateTemplate": "template",
    "/cim.v1.ConfigService/UpdateTemplate": "template",
}
# Calls whose credential is the x-verify-token, which must be judged before the payload.
WEBHOOKS = frozenset(
    {"/cim.v1.MessagingService/ReceiveMessages", "/cim.v1.MessagingService/UpdateContactInfo"}
)


def found_violations(
    request: Message, method: str, metadata: Any, url_check: UrlCheck | None = None
) -> list[FieldViolation]:
    """What is wrong with ``request``, each field named once, by its first problem."""
    found: dict[str, FieldViolation] = {}
    if message_facts(descriptor_of(request)).guarded:
        for v in violations(request, skip=BODY_ROOTS.get(method, ""), url_check=url_check):
            found.setdefault(v.field, v)
    for key, value in metadata or ():
        if key == IDEMPOTENCY_HEADER and len(value) > MAX_IDEMPOTENCY_KEY:
            found.setdefault(
                IDEMPOTENCY_FIELD,
                FieldViolation(IDEMPOTENCY_FIELD, f"at most {MAX_IDEMPOTENCY_KEY} characters"),
            )
    return list(found.values())


# -- provider callbacks ------------------------------------------------------------------

# What a provider's callback may carry, by the columns it is stored in:
# attempts/pending_receipts.provider_message_id, sessions.address, inbound type.
_PROVIDER_LIMITS = {"provider_message_id": 128, "from_address": 320, "type": 32}


def provider_problems(result: CallbackResult) -> list[FieldViolation]:
    """What in a parsed provider callback the database would refuse.

    Providers are not callers of the API, so nothing in a proto guards their
    payloads; the same rules are applied to what their adapter made of them.
    """
    found: list[FieldViolation] = []
    items: list[tuple[str, Any]] = [(f"receipts[{i}]", r) for i, r in enumerate(result.receipts)]
    items += [(f"inbound[{i}]", m) for i, m in enumerate(result.inbound)]
    for where, item in items:
        for f in fields(item):
            found.extend(_plain(getattr(item, f.name), f"{where}.{f.name}", f.name))
    return found


def _plain(value: Any, path: str, name: str = "") -> Iterator[FieldViolation]:
    if isinstance(value, str):
        limit = _PROVIDER_LIMITS.get(name, 0)
        if NUL in value:
            yield FieldViolation(path, NUL_TEXT)
        elif limit and len(value) > limit:
            yield FieldViolation(path, f"at most {limit} characters")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and NUL in key:
                yield FieldViolation(path, NUL_TEXT)
            else:
                yield from _plain(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _plain(item, f"{path}[{i}]")


Verify = Callable[[grpc.aio.ServicerContext], None]


class FieldGuard(WrappingInterceptor):
    """Sits inside the error interceptor, so a refusal becomes INVALID_ARGUMENT.

    ``verify`` refuses a webhook call without its token; it runs before a bad
    payload is reported, so a caller without the token learns nothing from it.
    ``url_check`` refuses media URLs at submit time that would be refused when
    fetched (an internal address, a scheme the guard does not allow).
    """

    def __init__(self, verify: Verify | None = None, url_check: UrlCheck | None = None) -> None:
        self._verify = verify
        self._url_check = url_check

    def check(self, request: Message, method: str, context: grpc.aio.ServicerContext) -> None:
        found = found_violations(request, method, context.invocation_metadata(), self._url_check)
        if not found:
            return
        if self._verify is not None and method in WEBHOOKS:
            self._verify(context)
        raise invalid(found)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        def unary(inner: Behaviour) -> Behaviour:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                self.check(request, method, context)
                return await inner(request, context)

            return call

        def stream(inner: Behaviour) -> Behaviour:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                self.check(request, method, context)
                async for item in forward(inner(request, context)):
                    yield item

            return call

        return rewrap(handler, unary=unary, stream=stream)
