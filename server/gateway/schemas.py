"""JSON Schema for the fields of cim.v1 messages, written from the facts the server
enforces (``server.api.contract``).

Each schema admits what the JSON mapping and the field guard take: the public
API's quirks (numbers for text, quoted whole numbers, ``"true"`` for a
boolean, ``null`` for "not given") as well as the canonical form, and it
refuses what they refuse (a NUL anywhere, text past its limit or pattern, a
number past its range, a list past its size, two members of one oneof).

Two leniencies of the mapping go unstated, as no schema of one value can say
them: an enum is also taken by its ProtoJSON number or in any case, and a
whole number sent for text is held to the text's limit by its digits.
"""

from __future__ import annotations

from typing import Any

from server.api.contract import (
    FLOAT_TEXT,
    FLOAT_WORDS,
    MAX_FREE_FORM_DEPTH,
    FieldFacts,
    Kind,
    MessageFacts,
)

__all__ = [
    "JSON_VALUE",
    "NO_NUL",
    "PRINTABLE_ASCII",
    "Schemas",
    "int_text_pattern",
    "json_value_schema",
]

# Text without a NUL: PostgreSQL refuses NUL in text and jsonb, so the guard does.
NO_NUL = "^[^\\u0000]*$"
PRINTABLE_ASCII = "^[ -~]*$"
JSON_VALUE = "JsonValue"
_JSON_VALUE_REF = {"$ref": f"#/components/schemas/{JSON_VALUE}"}
_BOOL_TEXT = "^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"
_FLOAT_TEXT = "^(?:" + "|".join([*FLOAT_WORDS, FLOAT_TEXT]) + ")$"
_FLOAT_MAX = 1.7976931348623157e308
_NULL = {"type": "null"}


class Schemas:
    """Collects one component schema per message reached, so recursion is a $ref."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def ref(self, facts: MessageFacts) -> dict[str, Any]:
        if facts.kind is Kind.STRUCT:
            return _json_object()
        if facts.kind is Kind.VALUE:
            return dict(_JSON_VALUE_REF)
        if facts.kind is Kind.LIST:
            return {"type": "array", "items": _JSON_VALUE_REF}
        if facts.kind is not Kind.MESSAGE:
            return {}
        name = facts.full_name
        if name not in self.components:
            self.components[name] = {}  # placeholder: a cycle finds the name already taken
            self.components[name] = self.message(facts)
        return {"$ref": f"#/components/schemas/{name}"}

    def message(self, facts: MessageFacts, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
        """``facts`` as an object, without the fields in ``omit`` (the URL carries them)."""
        fields = [f for f in facts.fields if f.name not in omit]
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.json_name: self.field(f) for f in fields},
            # The façade refuses unknown fields.
            "additionalProperties": False,
        }
        required = [f.json_name for f in fields if f.required]
        if required:
            schema["required"] = required
        branches = [_one_of(members) for members in facts.oneofs]
        if len(branches) == 1:
            schema["anyOf"] = branches[0]
        elif branches:
            schema["allOf"] = [{"anyOf": b} for b in branches]
        return schema

    def field(self, f: FieldFacts) -> dict[str, Any]:
        """A field of a JSON body: null stands for "not given" unless it is required."""
        if f.kind is Kind.MAP:
            assert f.key is not None and f.value is not None
            schema: dict[str, Any] = {
                "type": "object",
                "propertyNames": self.text(f.key, in_json=False),
                # A null value leaves its key out.
                "additionalProperties": _nullable(self.single(f.value)),
            }
        elif f.repeated:
            # Null items are left out (a Value item keeps its null).
            schema = {"type": "array", "items": _nullable(self.single(f))}
            if f.required:
                schema["minItems"] = 1
            if f.max_items:
                schema["maxItems"] = f.max_items
        else:
            schema = self.single(f)
        return schema if f.required else _nullable(schema)

    def single(self, f: FieldFacts) -> dict[str, Any]:
        """One value of ``f`` in a JSON body (one item of a list)."""
        if f.message is not None:
            return self.ref(f.child())
        if f.kind is Kind.TEXT:
            return self.text(f, in_json=True)
        if f.kind is Kind.BOOL:
            return {"type": ["boolean", "string"], "pattern": _BOOL_TEXT}
        if f.kind is Kind.INT:
            schema = _whole(f)
            schema["type"] = ["integer", "string"]
            schema["pattern"] = int_text_pattern(schema["minimum"], schema["maximum"])
            return schema
        if f.kind is Kind.FLOAT:
            return {
                "type": ["number", "string"],
                "minimum": -_FLOAT_MAX,
                "maximum": _FLOAT_MAX,
                "pattern": _FLOAT_TEXT,
            }
        if f.enum is not None:
            return {"type": "string", "enum": list(f.enum.names)}
        if f.kind is Kind.BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {}

    def text(self, f: FieldFacts, *, in_json: bool) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": ["string", "number"] if in_json and f.takes_numbers else "string"
        }
        if f.max_length:
            schema["maxLength"] = f.max_length
        if f.required and not f.repeated:
            # Required text must also be non-empty: proto3 cannot tell "" from unset.
            schema["minLength"] = 1
        # A declared pattern leaves NUL out already.
        schema["pattern"] = f.pattern or NO_NUL
        if f.fetched:
            # Fetched by the hub or a provider: it must pass the outbound guard.
            schema["format"] = "uri"
        return schema

    def parameter(self, f: FieldFacts) -> dict[str, Any]:
        """One value of ``f`` in a query string or a URL path, where everything is text."""
        if f.kind is Kind.TEXT:
            return self.text(f, in_json=False)
        if f.kind is Kind.BOOL:
            return {"type": "boolean"}
        if f.kind is Kind.INT:
            return _whole(f)
        if f.enum is not None:
            # Text is read as a name only.
            return {"type": "string", "enum": list(f.enum.names)}
        if f.kind is Kind.FLOAT:
            return {"type": "number", "minimum": -_FLOAT_MAX, "maximum": _FLOAT_MAX}
        return {"type": "string"}


def _whole(f: FieldFacts) -> dict[str, Any]:
    assert f.int_type is not None and f.low is not None and f.high is not None
    schema: dict[str, Any] = {"type": "integer", "minimum": f.low, "maximum": f.high}
    if f.int_type.format:
        schema["format"] = f.int_type.format
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kinds = schema.get("type")
    if kinds is None or "$ref" in schema or "anyOf" in schema:
        return {"anyOf": [schema, _NULL]} if schema else schema
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    widened = {**schema, "type": [*kinds, "null"]}
    if "enum" in schema:
        widened["enum"] = [*schema["enum"], None]
    return widened


def _one_of(members: tuple[str, ...]) -> list[dict[str, Any]]:
    """At most one member given: for some member, every other one is absent or null."""
    return [
        {"properties": {other: _NULL for other in members if other != kept}} for kept in members
    ]


def _json_object() -> dict[str, Any]:
    return {
        "type": "object",
        "propertyNames": {"pattern": NO_NUL},
        "additionalProperties": _JSON_VALUE_REF,
    }


def json_value_schema() -> dict[str, Any]:
    """Free-form JSON as the hub stores it: no NUL in any key or text, no NaN."""
    return {
        "description": "Any JSON value, nested at most "
        f"{MAX_FREE_FORM_DEPTH} levels deep, with no NUL in any key or string.",
        "anyOf": [
            {"type": ["null", "boolean"]},
            {"type": "number", "minimum": -_FLOAT_MAX, "maximum": _FLOAT_MAX},
            {"type": "string", "pattern": NO_NUL},
            {"type": "array", "items": _JSON_VALUE_REF},
            _json_object(),
        ],
    }


# -- whole numbers as text -------------------------------------------------------------


def int_text_pattern(low: int, high: int) -> str:
    """A pattern for the decimal texts of the whole numbers low..high, as the JSON
    mapping reads them: an optional minus, leading zeros allowed."""
    alternatives = []
    if low <= 0 <= high:
        alternatives.append("-?0+")
    if high >= 1:
        alternatives.append("0*(?:" + _digits(max(low, 1), high) + ")")
    if low <= -1:
        alternatives.append("-0*(?:" + _digits(max(-high, 1), -low) + ")")
    return "^(?:" + "|".join(alternatives) + ")$"


def _digits(low: int, high: int) -> str:
    """Alternatives matching the digits of low..high (1 <= low <= high), no leading zero."""
    parts = [_span(a, b) for a, b in _spans(low, high)]
    # "[1-9]|[1-9][0-9]|[1-9][0-9]{2}" reads better as "[1-9][0-9]{0,2}".
    run = 0
    while run < len(parts) and parts[run] == "[1-9]" + _any_digits(run):
        run += 1
    if run > 1:
        parts[:run] = [f"[1-9][0-9]{{0,{run - 1}}}"]
    return "|".join(parts)


def _spans(low: int, high: int) -> list[tuple[int, int]]:
    """low..high cut where the digit count or a run of trailing 9s or 0s changes,
    so each piece is one fixed prefix, one digit range and then any digits."""
    stops = {high}
    nines = 1
    stop = _fill_nines(low, nines)
    while low <= stop < high:
        stops.add(stop)
        nines += 1
        stop = _fill_nines(low, nines)
    zeros = 1
    stop = high + 1 - (high + 1) % 10**zeros - 1
    while low < stop <= high:
        stops.add(stop)
        zeros += 1
        stop = high + 1 - (high + 1) % 10**zeros - 1
    spans, start = [], low
    for stop in sorted(stops):
        spans.append((start, stop))
        start = stop + 1
    return spans


def _fill_nines(number: int, count: int) -> int:
    text = str(number)
    return int((text[:-count] if count < len(text) else "") + "9" * count)


def _span(low: int, high: int) -> str:
    pattern, free = "", 0
    for a, b in zip(str(low), str(high), strict=True):
        if a == b:
            pattern += a
        elif a == "0" and b == "9":
            free += 1
        else:
            pattern += f"[{a}-{b}]"
    return pattern + _any_digits(free)


def _any_digits(count: int) -> str:
    return "" if count == 0 else "[0-9]" if count == 1 else f"[0-9]{{{count}}}"
