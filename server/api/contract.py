"""What each field of a cim.v1 message takes, read once from the proto descriptors.

Three parts of the server need the same facts about a field: the JSON mapping
(gateway/jsonmap.py) converts and type-checks REST input with them, the field
guard (api/field_guard.py) applies their rules to every request, gRPC and REST
alike, and the OpenAPI document (gateway/openapi.py) publishes them. All three
read the ``FieldFacts`` made here, so a limit declared on a field in proto/
reaches the guard, the JSON mapping and the document together, and the document
states what the server enforces.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from functools import cache
from typing import cast

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from cim.v1 import annotations_pb2

__all__ = [
    "FLOAT_TEXT",
    "FLOAT_WORDS",
    "FRACTION_TEXT_MAX",
    "FREE_FORM",
    "INT_TEXT",
    "INT_TYPES",
    "MAX_FREE_FORM_DEPTH",
    "EnumFacts",
    "FieldFacts",
    "IntType",
    "Kind",
    "MessageFacts",
    "descriptor_of",
    "enum_facts",
    "message_facts",
]

_FD = FieldDescriptor


class Kind(enum.Enum):
    """How one value of a field is written in JSON."""

    TEXT = "text"
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    ENUM = "enum"
    BYTES = "bytes"
    MESSAGE = "message"
    MAP = "map"
    # google.protobuf.Struct, Value and ListValue: free-form JSON, stored as sent.
    STRUCT = "struct"
    VALUE = "value"
    LIST = "list"
    # Any other well-known type, in json_format's own JSON form.
    OTHER = "other"


FREE_FORM = frozenset({Kind.STRUCT, Kind.VALUE, Kind.LIST})

# A JSON number sent for a text field becomes its text (the public API's zip
# codes and WhatsApp ids), where no pattern could refuse the digits and the
# limit leaves room for any fraction's text, which is at most this long.
FRACTION_TEXT_MAX = 24
# A whole number sent as text, as ProtoJSON allows: plain decimal digits.
INT_TEXT = re.compile(r"-?[0-9]+")
# A fractional number sent as text: decimal, short enough to stay finite.
FLOAT_TEXT = r"-?[0-9]{1,17}(?:\.[0-9]{1,17})?(?:[eE][-+]?[0-9]{1,2})?"
FLOAT_WORDS = ("NaN", "Infinity", "-Infinity")
# Free-form JSON (Struct, Value, ListValue) is nested at most this deep.
MAX_FREE_FORM_DEPTH = 24
_WELL_KNOWN = {
    "google.protobuf.Struct": Kind.STRUCT,
    "google.protobuf.Value": Kind.VALUE,
    "google.protobuf.ListValue": Kind.LIST,
}


@dataclass(frozen=True, slots=True)
class IntType:
    """The whole numbers a proto integer type holds."""

    low: int
    high: int
    # The OpenAPI format, "" where none fits.
    format: str
    # ProtoJSON writes it as a string; the public API has always used a number.
    quoted: bool


_INT32 = IntType(-(2**31), 2**31 - 1, "int32", False)
_UINT32 = IntType(0, 2**32 - 1, "int64", False)
_INT64 = IntType(-(2**63), 2**63 - 1, "int64", True)
_UINT64 = IntType(0, 2**64 - 1, "", True)
INT_TYPES: dict[int, IntType] = {
    _FD.TYPE_INT32: _INT32,
    _FD.TYPE_SINT32: _INT32,
    _FD.TYPE_SFIXED32: _INT32,
    _FD.TYPE_UINT32: _UINT32,
    _FD.TYPE_FIXED32: _UINT32,
    _FD.TYPE_INT64: _INT64,
    _FD.TYPE_SINT64: _INT64,
    _FD.TYPE_SFIXED64: _INT64,
    _FD.TYPE_UINT64: _UINT64,
    _FD.TYPE_FIXED64: _UINT64,
}
_SCALARS = {
    _FD.TYPE_STRING: Kind.TEXT,
    _FD.TYPE_BOOL: Kind.BOOL,
    _FD.TYPE_DOUBLE: Kind.FLOAT,
    _FD.TYPE_FLOAT: Kind.FLOAT,
    _FD.TYPE_ENUM: Kind.ENUM,
    _FD.TYPE_BYTES: Kind.BYTES,
    **dict.fromkeys(INT_TYPES, Kind.INT),
}


def descriptor_of(message: Message | type[Message]) -> Descriptor:
    # The upb and pure-Python descriptor classes differ only to the type checker.
    return cast(Descriptor, message.DESCRIPTOR)


# -- enums -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnumFacts:
    """An enum as the public API spells it: value names without their type prefix."""

    full_name: str
    prefix: str
    # Public names and numbers of the values a caller may send: all but *_UNSPECIFIED.
    names: tuple[str, ...]
    numbers: tuple[int, ...]
    descriptor: EnumDescriptor = field(repr=False, compare=False)

    def public_name(self, number: int) -> str | int:
        value = self.descriptor.values_by_number.get(number)
        return number if value is None else _without(self.prefix, value.name)

    def number_of(self, text: str) -> int | None:
        """The value the full or the prefix-less name gives, in any case; None for
        none, and for *_UNSPECIFIED, which a caller leaves the field out for."""
        wanted = text.strip().upper()
        for candidate in (wanted, self.prefix + wanted):
            value = self.descriptor.values_by_name.get(candidate)
            if value is not None and value.number in self.numbers:
                return int(value.number)
        return None


def _unspecified(name: str, number: int) -> bool:
    return number == 0 and name.endswith("_UNSPECIFIED")


def _without(prefix: str, name: str) -> str:
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


@cache
def enum_facts(enum: EnumDescriptor) -> EnumFacts:
    prefix = _enum_prefix(enum)
    chosen = [v for v in enum.values if not _unspecified(v.name, v.number)]
    names = tuple(_without(prefix, v.name) for v in chosen)
    return EnumFacts(enum.full_name, prefix, names, tuple(v.number for v in chosen), enum)


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


# -- fields and messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldFacts:
    """One field: how it is written in JSON and the rules the server holds it to."""

    name: str
    json_name: str
    kind: Kind
    repeated: bool = False
    # Refused when left out: REQUIRED, or a whole number whose declared range
    # leaves out the 0 an unset field reads as.
    required: bool = False
    # Text: the longest accepted, a pattern to match, and whether the hub or a
    # provider fetches it (so it must pass the outbound guard at submit time).
    max_length: int = 0
    pattern: str = ""
    fetched: bool = False
    # Whole numbers: what the type holds, and the range the proto declares.
    int_type: IntType | None = None
    minimum: int | None = None
    maximum: int | None = None
    enum: EnumFacts | None = None
    # Lists: the most items accepted.
    max_items: int = 0
    # Maps: the key and the value, each with the map's own limit.
    key: FieldFacts | None = None
    value: FieldFacts | None = None
    # The message a MESSAGE (or free-form) field holds.
    message: Descriptor | None = field(default=None, repr=False, compare=False)

    @property
    def low(self) -> int | None:
        """The smallest whole number accepted: the declared minimum, else the type's."""
        if self.minimum is not None:
            return self.minimum
        return self.int_type.low if self.int_type else None

    @property
    def high(self) -> int | None:
        if self.maximum is not None:
            return self.maximum
        return self.int_type.high if self.int_type else None

    @property
    def takes_numbers(self) -> bool:
        """Text that a JSON number may be sent for (see FRACTION_TEXT_MAX)."""
        fits = not self.max_length or self.max_length >= FRACTION_TEXT_MAX
        return self.kind is Kind.TEXT and fits and not self.pattern

    @property
    def ranged(self) -> bool:
        """A whole number with a declared range, checked by the guard."""
        return self.minimum is not None or self.maximum is not None

    def child(self) -> MessageFacts:
        if self.message is None:
            raise TypeError(f"{self.name} holds no message")
        return message_facts(self.message)


@dataclass(slots=True)
class MessageFacts:
    full_name: str
    # MESSAGE, or the free-form or well-known kind the message is written as.
    kind: Kind
    fields: tuple[FieldFacts, ...] = ()
    # Fields by json name and by proto name: the public API accepts both.
    by_key: dict[str, FieldFacts] = field(default_factory=dict)
    # Json names of each oneof's members, for oneofs of two or more.
    oneofs: tuple[tuple[str, ...], ...] = ()
    # Fields with a declared rule or text at or below them: what the guard walks.
    guarded: tuple[FieldFacts, ...] = ()


_MESSAGES: dict[str, MessageFacts] = {}


def message_facts(desc: Descriptor) -> MessageFacts:
    """The facts of ``desc`` and, through ``FieldFacts.child``, of every message below."""
    found = _MESSAGES.get(desc.full_name)
    if found is not None:
        return found
    if desc.file.package == "google.protobuf":
        facts = MessageFacts(desc.full_name, _WELL_KNOWN.get(desc.full_name, Kind.OTHER))
        _MESSAGES[desc.full_name] = facts
        return facts
    fields = tuple(_field(f) for f in desc.fields)
    by_key = {f.name: f for f in fields} | {f.json_name: f for f in fields}
    oneofs = tuple(
        tuple(member.json_name for member in oneof.fields)
        for oneof in desc.oneofs
        if len(oneof.fields) > 1
    )
    facts = MessageFacts(desc.full_name, Kind.MESSAGE, fields, by_key, oneofs)
    # Settled before its fields are judged, so a type that contains itself ends
    # the walk; no request type does, and its inner copy would go unguarded.
    _MESSAGES[desc.full_name] = facts
    facts.guarded = tuple(f for f in fields if _is_guarded(f))
    return facts


def _field(f: FieldDescriptor) -> FieldFacts:
    opts = f.GetOptions()
    behaviours = opts.Extensions[field_behavior_pb2.field_behavior]
    base = FieldFacts(
        f.name,
        f.json_name,
        _SCALARS.get(f.type, Kind.MESSAGE),
        repeated=f.is_repeated,
        required=field_behavior_pb2.REQUIRED in behaviours,
        max_items=f.GetOptions().Extensions[annotations_pb2.max_items],
    )
    limit = opts.Extensions[annotations_pb2.max_length]
    if base.kind is Kind.MESSAGE:
        sub = f.message_type
        assert sub is not None
        if sub.GetOptions().map_entry:
            key = _field(sub.fields_by_name["key"])
            value = _field(sub.fields_by_name["value"])
            return replace(
                base,
                kind=Kind.MAP,
                max_length=limit,
                key=_with_limit(key, limit),
                value=_with_limit(value, limit),
            )
        kind = _WELL_KNOWN.get(sub.full_name, Kind.MESSAGE)
        if sub.file.package == "google.protobuf" and kind is Kind.MESSAGE:
            kind = Kind.OTHER
        return replace(base, kind=kind, message=sub)
    if base.kind is Kind.TEXT:
        return replace(
            base,
            max_length=limit,
            pattern=opts.Extensions[annotations_pb2.pattern],
            fetched=opts.Extensions[annotations_pb2.fetched_url],
        )
    if base.kind is Kind.INT:
        low = _declared(f, annotations_pb2.minimum)
        high = _declared(f, annotations_pb2.maximum)
        # proto3 reads an unset number as 0, so a range without 0 needs a value.
        needs_value = (low or 0) > 0 or (high if high is not None else 0) < 0
        return replace(
            base,
            required=base.required or (needs_value and not base.repeated),
            int_type=INT_TYPES[f.type],
            minimum=low,
            maximum=high,
        )
    if base.kind is Kind.ENUM:
        assert f.enum_type is not None
        return replace(base, enum=enum_facts(f.enum_type))
    return base


def _declared(f: FieldDescriptor, option: object) -> int | None:
    opts = f.GetOptions()
    return opts.Extensions[option] if opts.HasExtension(option) else None  # type: ignore[index,arg-type]


def _with_limit(facts: FieldFacts, limit: int) -> FieldFacts:
    """A map's key or value, held to the map's limit when it is text."""
    return replace(facts, max_length=limit) if facts.kind is Kind.TEXT else facts


def _is_guarded(f: FieldFacts) -> bool:
    if f.kind is Kind.TEXT or f.kind in FREE_FORM or f.max_items:
        return True
    if f.kind is Kind.INT:
        return f.ranged and not f.repeated
    if f.kind is Kind.MAP:
        assert f.key is not None and f.value is not None
        return f.key.kind is Kind.TEXT or _is_guarded(f.value)
    if f.kind is Kind.MESSAGE:
        return bool(f.child().guarded)
    return False
