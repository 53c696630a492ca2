"""Field rules declared in the protos (REQUIRED, max_length), checked on requests.

The OpenAPI document reads the same options, so what it promises is what the
server enforces.
"""

from __future__ import annotations

import re
from functools import cache

from google.api import field_behavior_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cim.v1 import annotations_pb2
from server.domain.errors import FieldViolation, invalid


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def violations(message: Message, parent: str = "") -> list[FieldViolation]:
    found: list[FieldViolation] = []
    for field in message.DESCRIPTOR.fields:
        options = field.GetOptions()
        path = _path(parent, field.json_name)
        required = (
            field_behavior_pb2.REQUIRED in options.Extensions[field_behavior_pb2.field_behavior]
        )
        limit = options.Extensions[annotations_pb2.max_length]
        pattern = options.Extensions[annotations_pb2.pattern]
        value = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated and not (
                field.message_type is not None and field.message_type.GetOptions().map_entry
            ):
                for i, item in enumerate(value):
                    found.extend(violations(item, f"{path}[{i}]"))
            elif not field.is_repeated and message.HasField(field.name):
                found.extend(violations(value, path))
            continue
        if field.type != FieldDescriptor.TYPE_STRING or field.is_repeated:
            continue
        if required and not value:
            found.append(FieldViolation(path, "required"))
        elif limit and len(value) > limit:
            found.append(FieldViolation(path, f"at most {limit} characters"))
        elif pattern and value and not _compiled(pattern).search(value):
            found.append(FieldViolation(path, f"must match {pattern}"))
    return found


def check(message: Message, *more: list[FieldViolation]) -> None:
    """Raise INVALID_ARGUMENT naming every field that breaks its declared rule or
    one of ``more``'s; each field is named once, by the first problem found."""
    found: dict[str, FieldViolation] = {}
    # The callers' own checks first: their wording is the more specific.
    for v in [*(v for group in more for v in group), *violations(message)]:
        found.setdefault(v.field, v)
    if found:
        raise invalid(found.values())
