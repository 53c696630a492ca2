"""A servicer's own checks, reported together with the rules the protos declare.

The declared rules (REQUIRED, max_length, pattern, ranges, no NUL) are walked
by the field guard, which applies them to every request before its servicer;
the OpenAPI document reads the same options, so what it promises is what the
server enforces.
"""

from __future__ import annotations

from google.protobuf.message import Message

from server.api.field_guard import violations
from server.domain.errors import FieldViolation, invalid


def check(message: Message, *more: list[FieldViolation]) -> None:
    """Raise INVALID_ARGUMENT naming every field that breaks its declared rule or
    one of ``more``'s; each field is named once, by the first problem found."""
    found: dict[str, FieldViolation] = {}
    # The callers' own checks first: their wording is the more specific.
    for v in [*(v for group in more for v in group), *violations(message)]:
        found.setdefault(v.field, v)
    if found:
        raise invalid(found.values())
