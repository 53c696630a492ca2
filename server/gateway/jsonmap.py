"""JSON <-> protobuf for the public REST API.

``json_format`` does the real conversion. A pre-pass guided by the field facts
of ``server.api.contract`` runs first, because the public API's documented
payloads were never strict ProtoJSON (see ``jsonvalues``) and send ``null`` for
"not given". The pre-pass also validates shape and types itself, so every
rejection carries the JSON path of the offending value instead of
``json_format``'s message text.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from server.api.contract import (
    FREE_FORM,
    FieldFacts,
    Kind,
    MessageFacts,
    descriptor_of,
    message_facts,
)

from .jsonvalues import (
    JsonMappingError,
    LongInteger,
    coerce_scalar,
    describe,
    free_form,
    join_path,
    loads,
)

__all__ = [
    "JsonMappingError",
    "LongInteger",
    "descriptor_of",
    "join_path",
    "loads",
    "parse",
    "to_json",
]

M = TypeVar("M", bound=Message)


# -- JSON -> proto pre-pass ------------------------------------------------------------


def _clean_value(field: FieldFacts, value: Any, path: str) -> Any:
    if field.kind is Kind.MESSAGE or field.kind in FREE_FORM or field.kind is Kind.OTHER:
        return _clean_message(field.child(), value, path)
    return coerce_scalar(field, value, path)


def _clean_map(field: FieldFacts, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise JsonMappingError(path, f"expected an object, got {describe(value)}")
    key_field, value_field = field.key, field.value
    assert key_field is not None and value_field is not None
    out: dict[str, Any] = {}
    for key, item in value.items():
        item_path = join_path(path, str(key))
        if key_field.kind is not Kind.TEXT:
            coerce_scalar(key_field, key, item_path)
        if item is None:
            continue
        out[key] = _clean_value(value_field, item, item_path)
    return out


def _clean_repeated(field: FieldFacts, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise JsonMappingError(path, f"expected an array, got {describe(value)}")
    keeps_null = field.kind is Kind.VALUE
    out: list[Any] = []
    for index, item in enumerate(value):
        if item is None and not keeps_null:
            continue
        out.append(_clean_value(field, item, f"{path}[{index}]"))
    return out


def _check_free_form_shape(facts: MessageFacts, value: Any, path: str) -> None:
    if facts.kind is Kind.STRUCT and not isinstance(value, dict):
        raise JsonMappingError(path, f"expected an object, got {describe(value)}")
    if facts.kind is Kind.LIST and not isinstance(value, list):
        raise JsonMappingError(path, f"expected an array, got {describe(value)}")


def _clean_message(facts: MessageFacts, value: Any, path: str) -> Any:
    if facts.kind is not Kind.MESSAGE:
        # Well-known types have their own JSON forms that json_format already owns;
        # Struct/Value/ListValue in particular must keep nulls and numbers as sent.
        _check_free_form_shape(facts, value, path)
        return free_form(value, path)
    if not isinstance(value, dict):
        raise JsonMappingError(path, f"expected an object, got {describe(value)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = facts.by_key.get(key) if isinstance(key, str) else None
        if field is None:
            raise JsonMappingError(join_path(path, str(key)), "unknown field")
        field_path = join_path(path, field.json_name)
        if item is None:
            continue
        if field.json_name in out:
            raise JsonMappingError(field_path, "given twice, by json name and proto name")
        _check_oneof(facts, field, out, field_path)
        if field.kind is Kind.MAP:
            out[field.json_name] = _clean_map(field, item, field_path)
        elif field.repeated:
            out[field.json_name] = _clean_repeated(field, item, field_path)
        else:
            out[field.json_name] = _clean_value(field, item, field_path)
    return out


def _check_oneof(facts: MessageFacts, field: FieldFacts, seen: dict[str, Any], path: str) -> None:
    for members in facts.oneofs:
        if field.json_name in members:
            other = next((m for m in members if m in seen), None)
            if other is not None:
                raise JsonMappingError(
                    path, f"only one of {other} and {field.json_name} may be set"
                )


_AT_PATH = re.compile(r' at "?([A-Za-z_][\w.\[\]]*?)"?\.?(?:\s|$)')
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")


def _path_from_parse_error(message: str) -> str:
    """Best-effort JSON path from a json_format error the pre-pass did not foresee."""
    found = _AT_PATH.search(message)
    if found:
        # json_format reports "RootMessage.a.b"; the root name is not part of the path.
        _, _, rest = found.group(1).partition(".")
        if rest.rstrip("."):
            return rest.rstrip(".")
    return ".".join(_FAILED_FIELD.findall(message))


def parse(data: Any, message_cls: type[M]) -> M:
    """Build ``message_cls`` from decoded JSON, tolerating the documented quirks."""
    cleaned = _clean_message(message_facts(descriptor_of(message_cls)), data, "")
    message = message_cls()
    try:
        json_format.ParseDict(cleaned, message)
    except json_format.ParseError as exc:
        text = str(exc)
        raise JsonMappingError(_path_from_parse_error(text), text.split("\n")[0]) from exc
    return message


# -- proto -> JSON ---------------------------------------------------------------------


def to_json(message: Message) -> dict[str, Any]:
    """ProtoJSON with json names and defaults omitted, in the public API's spelling:
    64-bit integers as numbers and enums without their type prefix."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    return _polish_message(message_facts(descriptor_of(message)), data)


def _polish_message(facts: MessageFacts, data: Any) -> Any:
    if facts.kind is not Kind.MESSAGE or not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = facts.by_key[key]
        if field.kind is Kind.MAP:
            assert field.value is not None
            value_field = field.value
            out[key] = {k: _polish_value(value_field, v) for k, v in value.items()}
        elif field.repeated:
            out[key] = [_polish_value(field, v) for v in value]
        elif field.kind is Kind.ENUM and value == 0:
            # An explicitly set UNSPECIFIED still means "not set" to API clients.
            continue
        else:
            out[key] = _polish_value(field, value)
    return out


def _polish_value(field: FieldFacts, value: Any) -> Any:
    if field.message is not None:
        return _polish_message(field.child(), value)
    if field.int_type is not None and field.int_type.quoted and isinstance(value, str):
        return int(value)
    if field.enum is not None and isinstance(value, int):
        return field.enum.public_name(value)
    return value
