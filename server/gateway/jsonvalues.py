"""One JSON value for one field: what the public REST API takes for each kind.

The public API's documented payloads were never strict ProtoJSON: they send
numbers where strings are declared (zip codes, WhatsApp ids), enum values in
lower case and without their type prefix, and booleans and integers as quoted
text. Each value is checked and settled here, against the facts of the field it
is for, so every refusal names the JSON path of the offending value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from server.api.contract import (
    FLOAT_TEXT,
    FLOAT_WORDS,
    INT_TEXT,
    MAX_FREE_FORM_DEPTH,
    EnumFacts,
    FieldFacts,
    Kind,
)

__all__ = [
    "JsonMappingError",
    "LongInteger",
    "coerce_scalar",
    "describe",
    "free_form",
    "join_path",
    "loads",
]

_FLOAT_TEXT = re.compile(FLOAT_TEXT)
_NUMBER_TEXT = re.compile(r"[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?")
# 2**64 has 20 digits, so longer integer text is out of range for every field;
# stopping there also keeps int() off text long enough to be slow or refused.
_MAX_INT_DIGITS = 20
# Integer literals longer than this stay text until a field says what they are.
_LONG_LITERAL = 64


class JsonMappingError(ValueError):
    """A JSON value that cannot become the requested message.

    ``field`` is the dotted JSON path (json names, ``[i]`` for list items);
    empty when the document itself is the problem.
    """

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description


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


def _allowed(enum: EnumFacts) -> str:
    return ", ".join(enum.names)


def _enum_number(enum: EnumFacts, text: str, path: str) -> int:
    number = enum.number_of(text)
    if number is None:
        raise JsonMappingError(path, f"unknown value {text!r}; expected one of: {_allowed(enum)}")
    return number


# -- scalars ---------------------------------------------------------------------------


def describe(value: Any) -> str:
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


def coerce_scalar(field: FieldFacts, value: Any, path: str) -> Any:
    kind = field.kind
    if kind is Kind.TEXT:
        return _coerce_text(field, value, path)
    if kind is Kind.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise JsonMappingError(path, f"expected a boolean, got {describe(value)}")
    if kind is Kind.INT:
        return _coerce_int(field, value, path)
    if kind is Kind.FLOAT:
        return _coerce_float(value, path)
    if kind is Kind.ENUM:
        return _coerce_enum(field, value, path)
    if kind is Kind.BYTES:
        if isinstance(value, str):
            return value
        raise JsonMappingError(path, f"expected base64 text, got {describe(value)}")
    raise JsonMappingError(path, "unsupported field type")


def _coerce_text(field: FieldFacts, value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    if field.takes_numbers:
        if isinstance(value, LongInteger):
            return value.text
        if _is_finite_number(value):
            return _number_text(value)
    raise JsonMappingError(path, f"expected a string, got {describe(value)}")


def _coerce_float(value: Any, path: str) -> Any:
    if isinstance(value, LongInteger):
        value = float(value.text)
    if _is_finite_number(value):
        return value
    # Quoted "NaN" and "Infinity" are ProtoJSON; bare literals are not JSON at all.
    if isinstance(value, str) and (value in FLOAT_WORDS or _FLOAT_TEXT.fullmatch(value)):
        return value if value in FLOAT_WORDS else float(value)
    raise JsonMappingError(path, f"expected a number, got {describe(value)}")


def _coerce_enum(field: FieldFacts, value: Any, path: str) -> Any:
    enum = field.enum
    assert enum is not None
    if isinstance(value, str):
        return enum.descriptor.values_by_number[_enum_number(enum, value, path)].name
    if isinstance(value, int) and not isinstance(value, bool):
        if value in enum.numbers:
            return value
        raise JsonMappingError(path, f"unknown value {value}; expected one of: {_allowed(enum)}")
    raise JsonMappingError(path, f"expected an enum name, got {describe(value)}")


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
    if INT_TEXT.fullmatch(value):
        negative = value.startswith("-")
        digits = value.lstrip("-").lstrip("0") or "0"
        if len(digits) > _MAX_INT_DIGITS:
            return -math.inf if negative else math.inf
        return -int(digits) if negative else int(digits)
    # Other number text is refused; past every integer type it is named as such.
    if _NUMBER_TEXT.fullmatch(value):
        try:
            number = float(value)
        except ValueError:
            return None
        if abs(number) > 2**64:
            return number
    return None


def _coerce_int(field: FieldFacts, value: Any, path: str) -> int:
    number = _integer_of(value)
    if number is None:
        got = repr(value) if _is_finite_number(value) else describe(value)
        raise JsonMappingError(path, f"expected an integer, got {got}")
    assert field.int_type is not None
    low, high = field.int_type.low, field.int_type.high
    if not low <= number <= high:
        raise JsonMappingError(path, f"integer out of range [{low}, {high}]")
    return int(number)


# -- free-form JSON ---------------------------------------------------------------------


def free_form(value: Any, path: str) -> Any:
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
        if depth > MAX_FREE_FORM_DEPTH:
            raise JsonMappingError(where, f"nested deeper than {MAX_FREE_FORM_DEPTH} levels")
        for key, item_path in entries:
            item = settle(node[key], item_path)
            if item is not node[key]:
                node[key] = item
            pending.append((item, item_path, depth + 1))
    return root
