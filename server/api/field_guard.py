"""Checks every request's strings before its servicer sees them.

PostgreSQL refuses NUL in text and in jsonb, and refuses text longer than a
varchar column; either would surface as an internal error. This interceptor
applies the rules the protos declare (REQUIRED text, max_length, pattern,
minimum and maximum) and a NUL check to every string of every request,
including map keys and values and the text inside google.protobuf.Struct, so
SQLite and PostgreSQL refuse the same input with the same INVALID_ARGUMENT.
The ``idempotency-key`` metadata is stored too, so it is held to its column's
length.

What to check is worked out once per message type; a type with no string
anywhere below it costs one dictionary lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import grpc
from google.api import field_behavior_pb2
from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from cim.v1 import annotations_pb2
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

_FD = FieldDescriptor
_STRUCT = struct_pb2.Struct.DESCRIPTOR.full_name
_VALUE = struct_pb2.Value.DESCRIPTOR.full_name
_LIST = struct_pb2.ListValue.DESCRIPTOR.full_name
_DYNAMIC = {_STRUCT, _VALUE, _LIST}

# How a field is walked.
_TEXT, _TEXTS, _MAP, _CHILD, _CHILDREN, _JSON, _NUMBER = range(7)
_WHOLE = {
    _FD.TYPE_INT32,
    _FD.TYPE_INT64,
    _FD.TYPE_SINT32,
    _FD.TYPE_SINT64,
    _FD.TYPE_UINT32,
    _FD.TYPE_UINT64,
    _FD.TYPE_FIXED32,
    _FD.TYPE_FIXED64,
    _FD.TYPE_SFIXED32,
    _FD.TYPE_SFIXED64,
}


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    json_name: str
    kind: int
    required: bool = False
    limit: int = 0
    pattern: str = ""
    # For maps: whether keys and values are text, and the value's type when a message.
    key_text: bool = False
    value_text: bool = False
    child: Descriptor | None = None
    repeated: bool = False
    minimum: int | None = None
    maximum: int | None = None
    # A URL the hub or a provider will fetch, held to the outbound guard.
    fetched: bool = False


UrlCheck = Callable[[str], "str | None"]
_PLANS: dict[str, tuple[_Rule, ...]] = {}


def _options(f: FieldDescriptor) -> tuple[bool, int, str]:
    opts = f.GetOptions()
    required = field_behavior_pb2.REQUIRED in opts.Extensions[field_behavior_pb2.field_behavior]
    return (
        required,
        opts.Extensions[annotations_pb2.max_length],
        opts.Extensions[annotations_pb2.pattern],
    )


def plan(desc: Any) -> tuple[_Rule, ...]:
    """The fields of ``desc`` with a rule or text to check, directly or below; () for none."""
    found = _PLANS.get(desc.full_name)
    if found is not None:
        return found
    # Settled before its fields are, so a type that contains itself ends the walk;
    # no request type does today, and its inner copy would go unchecked.
    _PLANS[desc.full_name] = ()
    rules = [rule for rule in map(_rule, desc.fields) if rule is not None]
    result = tuple(rules)
    _PLANS[desc.full_name] = result
    return result


def _rule(f: FieldDescriptor) -> _Rule | None:
    required, limit, pattern = _options(f)

    def make(kind: int, **extra: Any) -> _Rule:
        return _Rule(
            f.name,
            f.json_name,
            kind,
            required=required,
            repeated=f.is_repeated,
            **extra,
        )

    if f.type == _FD.TYPE_STRING:
        fetched = f.GetOptions().Extensions[annotations_pb2.fetched_url]
        kind = _TEXTS if f.is_repeated else _TEXT
        return make(kind, limit=limit, pattern=pattern, fetched=fetched)
    if f.type in _WHOLE and not f.is_repeated:
        low, high = number_range(f)
        if low is not None or high is not None:
            return make(_NUMBER, minimum=low, maximum=high)
    if f.type != _FD.TYPE_MESSAGE:
        return None
    sub = f.message_type
    assert sub is not None
    if sub.GetOptions().map_entry:
        key, value = sub.fields_by_name["key"], sub.fields_by_name["value"]
        value_child = value.message_type if value.type == _FD.TYPE_MESSAGE else None
        rule = make(
            _MAP,
            limit=limit,
            key_text=key.type == _FD.TYPE_STRING,
            value_text=value.type == _FD.TYPE_STRING,
            child=value_child,
        )
        if rule.key_text or rule.value_text or (value_child and _has_text(value_child)):
            return rule
    elif sub.full_name in _DYNAMIC:
        return make(_JSON, child=sub)
    elif _has_text(sub):
        return make(_CHILDREN if f.is_repeated else _CHILD, child=sub)
    return None


def number_range(f: FieldDescriptor) -> tuple[int | None, int | None]:
    """The declared (minimum, maximum) of a whole-number field; None where unset."""
    opts = f.GetOptions()
    low = (
        opts.Extensions[annotations_pb2.minimum]
        if opts.HasExtension(annotations_pb2.minimum)
        else None
    )
    high = (
        opts.Extensions[annotations_pb2.maximum]
        if opts.HasExtension(annotations_pb2.maximum)
        else None
    )
    return low, high


def _has_text(desc: Descriptor) -> bool:
    return desc.full_name in _DYNAMIC or bool(plan(desc))


def _path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _text(rule: _Rule, value: str, path: str) -> FieldViolation | None:
    if NUL in value:
        return FieldViolation(path, NUL_TEXT)
    if rule.limit and len(value) > rule.limit:
        return FieldViolation(path, f"at most {rule.limit} characters")
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
    for rule in plan(message.DESCRIPTOR):
        path = "" if rule.name == skip else _path(parent, rule.json_name)
        kind = rule.kind
        if kind == _TEXT:
            value = getattr(message, rule.name)
            if not value:
                if rule.required:
                    yield FieldViolation(path, "required")
                continue
            bad = _text(rule, value, path)
            if bad is None and rule.pattern and not field_pattern(rule.pattern).search(value):
                bad = FieldViolation(path, f"must match {rule.pattern}")
            if bad is None and rule.fetched and url_check is not None:
                refusal = url_check(value)
                bad = FieldViolation(path, refusal) if refusal else None
            if bad is not None:
                yield bad
        elif kind == _NUMBER:
            number = getattr(message, rule.name)
            if rule.minimum is not None and number < rule.minimum:
                yield FieldViolation(path, f"must be at least {rule.minimum}")
            elif rule.maximum is not None and number > rule.maximum:
                yield FieldViolation(path, f"must be at most {rule.maximum}")
        elif kind == _TEXTS:
            for i, item in enumerate(getattr(message, rule.name)):
                bad = _text(rule, item, f"{path}[{i}]")
                if bad is not None:
                    yield bad
        elif kind == _CHILD:
            if message.HasField(rule.name):
                yield from violations(getattr(message, rule.name), path, url_check=url_check)
        elif kind == _CHILDREN:
            for i, item in enumerate(getattr(message, rule.name)):
                yield from violations(item, f"{path}[{i}]", url_check=url_check)
        elif kind == _MAP:
            yield from _map(rule, getattr(message, rule.name), path, url_check)
        elif rule.repeated:
            for i, item in enumerate(getattr(message, rule.name)):
                yield from _json_strings(item, f"{path}[{i}]")
        elif message.HasField(rule.name):
            yield from _json_strings(getattr(message, rule.name), path)


def _map(
    rule: _Rule, entries: Any, path: str, url_check: UrlCheck | None
) -> Iterator[FieldViolation]:
    for key, value in entries.items():
        if rule.key_text and NUL in key:
            yield FieldViolation(path, NUL_TEXT)
            continue
        where = f"{path}.{key}"
        if rule.key_text and rule.limit and len(key) > rule.limit:
            yield FieldViolation(path, f"keys at most {rule.limit} characters")
        elif rule.value_text:
            bad = _text(rule, value, where)
            if bad is not None:
                yield bad
        elif rule.child is not None and rule.child.full_name in _DYNAMIC:
            yield from _json_strings(value, where)
        elif rule.child is not None:
            yield from violations(value, where, url_check=url_check)


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
    if plan(request.DESCRIPTOR):
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
