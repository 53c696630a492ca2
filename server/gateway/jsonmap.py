"""JSON <-> protobuf for the public REST API.

``json_format`` does the real conversion. A descriptor-guided pre-pass runs first
because the public API's documented payloads were never strict ProtoJSON: they
send numbers where strings are declared (zip codes, WhatsApp ids), enum values in
lower case and without their type prefix, and ``null`` for "not given". The
pre-pass also validates shape and types itself, so every rejection carries the
JSON path of the offending value instead of ``json_format``'s message text.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from typing import Any, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = [
    "JsonMappingError",
    "LongInteger",
    "descriptor_of",
    "enum_public_name",
    "enum_type",
    "enum_value_from_text",
    "join_path",
    "loads",
    "message_type",
    "parse",
    "to_json",
]

M = TypeVar("M", bound=Message)

_FD = FieldDescriptor
_INT_TYPES = frozenset(
    {
        _FD.TYPE_INT32,
        _FD.TYPE_INT64,
        _FD.TYPE_UINT32,
        _FD.TYPE_UINT64,
        _FD.TYPE_SINT32,
        _FD.TYPE_SINT64,
        _FD.TYPE_FIXED32,
        _FD.TYPE_FIXED64,
        _FD.TYPE_SFIXED32,
        _FD.TYPE_SFIXED64,
    }
)
# ProtoJSON quotes these; the public API has always sent and received numbers.
_INT64_TYPES = frozenset(
    {
        _FD.TYPE_INT64,
        _FD.TYPE_UINT64,
        _FD.TYPE_SINT64,
        _FD.TYPE_FIXED64,
        _FD.TYPE_SFIXED64,
    }
)
_INT_RANGES = {
    _FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _FD.TYPE_UINT32: (0, 2**32 - 1),
    _FD.TYPE_FIXED32: (0, 2**32 - 1),
    _FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _FD.TYPE_UINT64: (0, 2**64 - 1),
    _FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})
# 2**64 has 20 digits, so longer integer text is out of range for every field;
# stopping there also keeps int() off text long enough to be slow or refused.
_MAX_INT_DIGITS = 20
# Integer literals longer than this stay text until a field says what they are.
_LONG_LITERAL = 64
# Objects and arrays inside a Struct, Value or ListValue.
_MAX_FREE_FORM_DEPTH = 24


class JsonMappingError(ValueError):
    """A JSON value that cannot become the requested message.

    ``field`` is the dotted JSON path (json names, ``[i]`` for list items);
    empty when the document itself is the problem.
    """

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description


def message_type(field: FieldDescriptor) -> Descriptor:
    """``field.message_type`` for a field known to be a message (stubs say Optional)."""
    desc = field.message_type
    if desc is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return desc


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    desc = field.enum_type
    if desc is None:
        raise TypeError(f"{field.full_name} is not an enum field")
    return desc


def descriptor_of(message: Message | type[Message]) -> Descriptor:
    # The upb and pure-Python descriptor classes differ only to the type checker.
    return cast(Descriptor, message.DESCRIPTOR)


def join_path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


class LongInteger:
    """An integer literal in a JSON document too long to be worth converting.

    Python refuses int() on very long digit strings (and is slow on long ones),
    and only the target field knows whether the digits are text or a number.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"LongInteger({self.text[:24]}...)"


def _parse_int(text: str) -> int | LongInteger:
    return LongInteger(text) if len(text) > _LONG_LITERAL else int(text)


def loads(raw: bytes | str) -> Any:
    """``json.loads`` for request bodies: long integer literals become ``LongInteger``.

    NaN and Infinity literals still decode (to floats) so that the field they sit in
    can be named when they are refused.
    """
    return json.loads(raw, parse_int=_parse_int)


# -- enums -----------------------------------------------------------------------------


@cache
def _enum_prefix(enum: EnumDescriptor) -> str:
    """The prefix every value name of ``enum`` shares, e.g. ``SENDER_TYPE_``."""
    names = [v.name for v in enum.values]
    # The style guide prefixes values with the UPPER_SNAKE type name; prefer it
    # so a single-value enum still loses exactly that prefix.
    conventional = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    if all(n.startswith(conventional) and len(n) > len(conventional) for n in names):
        return conventional
    if len(names) < 2:
        return ""
    parts = [n.split("_") for n in names]
    common: list[str] = []
    for words in zip(*parts, strict=False):
        if len(set(words)) != 1:
            break
        common.append(words[0])
    # Never swallow a whole value name.
    if any(len(p) <= len(common) for p in parts):
        return ""
    return "_".join(common) + "_" if common else ""


def enum_public_name(enum: EnumDescriptor, number: int) -> str | int:
    """The value as the public API spells it: the name without the type prefix."""
    value = enum.values_by_number.get(number)
    if value is None:
        return number
    prefix = _enum_prefix(enum)
    return value.name[len(prefix) :] if prefix and value.name.startswith(prefix) else value.name


def _allowed(enum: EnumDescriptor) -> str:
    shown = [
        str(enum_public_name(enum, v.number))
        for v in enum.values
        if not v.name.endswith("_UNSPECIFIED")
    ]
    return ", ".join(shown)


def enum_value_from_text(enum: EnumDescriptor, text: str, path: str) -> int:
    """Resolve the full name or the prefix-less name, case-insensitively."""
    wanted = text.strip().upper()
    prefix = _enum_prefix(enum)
    for candidate in (wanted, prefix + wanted):
        value = enum.values_by_name.get(candidate)
        if value is not None:
            return int(value.number)
    raise JsonMappingError(path, f"unknown value {text!r}; expected one of: {_allowed(enum)}")


# -- JSON -> proto pre-pass ------------------------------------------------------------


def _is_passthrough(desc: Descriptor) -> bool:
    # Well-known types have their own JSON forms that json_format already owns;
    # Struct/Value/ListValue in particular must keep nulls and numbers as sent.
    return desc.file.package == "google.protobuf"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return "a non-finite number"
    if isinstance(value, (int, float, LongInteger)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _number_text(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    # repr is the shortest text that round-trips, so 12.90909 stays "12.90909".
    return repr(value)


def _coerce_scalar(field: FieldDescriptor, value: Any, path: str) -> Any:
    ftype = field.type
    if ftype == _FD.TYPE_STRING:
        if isinstance(value, str):
            return value
        if isinstance(value, LongInteger):
            return value.text
        if _is_finite_number(value):
            return _number_text(value)
        raise JsonMappingError(path, f"expected a string, got {_kind(value)}")
    if ftype == _FD.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise JsonMappingError(path, f"expected a boolean, got {_kind(value)}")
    if ftype in _INT_TYPES:
        return _coerce_int(ftype, value, path)
    if ftype in (_FD.TYPE_DOUBLE, _FD.TYPE_FLOAT):
        if isinstance(value, LongInteger):
            value = float(value.text)
        if _is_finite_number(value):
            return value
        # Quoted "NaN" and "Infinity" are ProtoJSON; bare literals are not JSON at all.
        if isinstance(value, str):
            if value in _FLOAT_WORDS:
                return value
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
        raise JsonMappingError(path, f"expected a number, got {_kind(value)}")
    if ftype == _FD.TYPE_ENUM:
        enum = enum_type(field)
        if isinstance(value, str):
            return enum.values_by_number[enum_value_from_text(enum, value, path)].name
        if isinstance(value, int) and not isinstance(value, bool):
            if value in enum.values_by_number:
                return value
            raise JsonMappingError(
                path, f"unknown value {value}; expected one of: {_allowed(enum)}"
            )
        raise JsonMappingError(path, f"expected an enum name, got {_kind(value)}")
    if ftype == _FD.TYPE_BYTES:
        if isinstance(value, str):
            return value
        raise JsonMappingError(path, f"expected base64 text, got {_kind(value)}")
    raise JsonMappingError(path, "unsupported field type")


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def _integer_of(value: Any) -> int | float | None:
    """``value`` as an integer, +-inf for one too large to convert, None for no integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # 1e400 has already overflowed to inf; NaN and fractions are no integer.
        return int(value) if value.is_integer() else None
    if isinstance(value, LongInteger):
        return -math.inf if value.text.startswith("-") else math.inf
    if not isinstance(value, str):
        return None
    # ProtoJSON allows quoted integers; int64 clients often send them that way.
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        if len(text.lstrip("-")) > _MAX_INT_DIGITS:
            return -math.inf if text.startswith("-") else math.inf
        return int(text)
    if not re.fullmatch(r"[-+]?[\d.]+(?:[eE][-+]?\d+)?", text):
        return None  # also keeps "NaN" and "Infinity" out
    try:
        as_float = float(text)
    except ValueError:
        return None
    if math.isinf(as_float):
        return as_float
    return int(as_float) if as_float.is_integer() else None


def _coerce_int(ftype: int, value: Any, path: str) -> int:
    number = _integer_of(value)
    if number is None:
        got = repr(value) if _is_finite_number(value) else _kind(value)
        raise JsonMappingError(path, f"expected an integer, got {got}")
    low, high = _INT_RANGES[ftype]
    if not low <= number <= high:
        raise JsonMappingError(path, f"integer out of range [{low}, {high}]")
    return int(number)


def _clean_value(field: FieldDescriptor, value: Any, path: str) -> Any:
    if field.type == _FD.TYPE_MESSAGE:
        return _clean_message(message_type(field), value, path)
    return _coerce_scalar(field, value, path)


def _clean_map(field: FieldDescriptor, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise JsonMappingError(path, f"expected an object, got {_kind(value)}")
    key_field = message_type(field).fields_by_name["key"]
    value_field = message_type(field).fields_by_name["value"]
    out: dict[str, Any] = {}
    for key, item in value.items():
        item_path = join_path(path, str(key))
        if key_field.type != _FD.TYPE_STRING:
            _coerce_scalar(key_field, key, item_path)
        if item is None:
            continue
        out[key] = _clean_value(value_field, item, item_path)
    return out


def _clean_repeated(field: FieldDescriptor, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise JsonMappingError(path, f"expected an array, got {_kind(value)}")
    keeps_null = field.type == _FD.TYPE_MESSAGE and message_type(field).full_name in (
        "google.protobuf.Value",
    )
    out: list[Any] = []
    for index, item in enumerate(value):
        if item is None and not keeps_null:
            continue
        out.append(_clean_value(field, item, f"{path}[{index}]"))
    return out


def _check_wkt_shape(desc: Descriptor, value: Any, path: str) -> None:
    if desc.full_name == "google.protobuf.Struct" and not isinstance(value, dict):
        raise JsonMappingError(path, f"expected an object, got {_kind(value)}")
    if desc.full_name == "google.protobuf.ListValue" and not isinstance(value, list):
        raise JsonMappingError(path, f"expected an array, got {_kind(value)}")


def _free_form(value: Any, path: str) -> Any:
    """``value`` with long integer literals as floats; NaN, infinities and deep nests refused.

    Free-form JSON is stored and sent on as JSON, which has no NaN or infinity,
    and every level costs about three levels of protobuf nesting, which decoders
    cap at 100. A loop rather than recursion: the depth is the client's to choose.
    """

    def settle(item: Any, where: str) -> Any:
        if isinstance(item, LongInteger):
            item = float(item.text)
        if isinstance(item, float) and not math.isfinite(item):
            raise JsonMappingError(where, "expected a finite number")
        return item

    root = settle(value, path)
    pending = [(root, path, 1)]
    while pending:
        node, where, depth = pending.pop()
        if isinstance(node, dict):
            entries: Any = [(k, join_path(where, str(k))) for k in node]
        elif isinstance(node, list):
            entries = [(i, f"{where}[{i}]") for i in range(len(node))]
        else:
            continue
        if depth > _MAX_FREE_FORM_DEPTH:
            raise JsonMappingError(where, f"nested deeper than {_MAX_FREE_FORM_DEPTH} levels")
        for key, item_path in entries:
            item = settle(node[key], item_path)
            if item is not node[key]:
                node[key] = item
            pending.append((item, item_path, depth + 1))
    return root


def _clean_message(desc: Descriptor, value: Any, path: str) -> Any:
    if _is_passthrough(desc):
        _check_wkt_shape(desc, value, path)
        return _free_form(value, path)
    if not isinstance(value, dict):
        raise JsonMappingError(path, f"expected an object, got {_kind(value)}")
    by_key = _fields_by_key(desc)
    out: dict[str, Any] = {}
    seen_oneofs: dict[str, str] = {}
    for key, item in value.items():
        field = by_key.get(key) if isinstance(key, str) else None
        if field is None:
            raise JsonMappingError(join_path(path, str(key)), "unknown field")
        field_path = join_path(path, field.json_name)
        if item is None:
            continue
        if field.json_name in out:
            raise JsonMappingError(field_path, "given twice, by json name and proto name")
        oneof = field.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:
            other = seen_oneofs.get(oneof.name)
            if other is not None:
                raise JsonMappingError(
                    field_path, f"only one of {other} and {field.json_name} may be set"
                )
            seen_oneofs[oneof.name] = field.json_name
        if _is_map(field):
            out[field.json_name] = _clean_map(field, item, field_path)
        elif field.is_repeated:
            out[field.json_name] = _clean_repeated(field, item, field_path)
        else:
            out[field.json_name] = _clean_value(field, item, field_path)
    return out


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == _FD.TYPE_MESSAGE
        and field.is_repeated
        and message_type(field).GetOptions().map_entry
    )


@cache
def _fields_by_key(desc: Descriptor) -> dict[str, FieldDescriptor]:
    keys: dict[str, FieldDescriptor] = {}
    for field in desc.fields:
        keys[field.name] = field
        keys[field.json_name] = field
    return keys


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
    cleaned = _clean_message(descriptor_of(message_cls), data, "")
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
    return _polish_message(descriptor_of(message), data)


def _polish_message(desc: Descriptor, data: Any) -> Any:
    if _is_passthrough(desc) or not isinstance(data, dict):
        return data
    fields = _fields_by_key(desc)
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = fields[key]
        if _is_map(field):
            value_field = message_type(field).fields_by_name["value"]
            out[key] = {k: _polish_value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[key] = [_polish_value(field, v) for v in value]
        elif field.type == _FD.TYPE_ENUM and value == 0:
            # An explicitly set UNSPECIFIED still means "not set" to API clients.
            continue
        else:
            out[key] = _polish_value(field, value)
    return out


def _polish_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == _FD.TYPE_MESSAGE:
        return _polish_message(message_type(field), value)
    if field.type in _INT64_TYPES and isinstance(value, str):
        return int(value)
    if field.type == _FD.TYPE_ENUM and isinstance(value, int):
        return enum_public_name(enum_type(field), value)
    return value
