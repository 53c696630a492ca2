"""Domain errors. Each carries a status code name and an UPPER_SNAKE reason.

The code names match gRPC's status codes; the transport layer maps them, so the
domain stays free of grpc.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Code(StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: a dotted path in the public (JSON) spelling and why."""

    field: str
    description: str


@dataclass(eq=False)
class DomainError(Exception):
    code: Code
    reason: str
    message: str
    violations: tuple[FieldViolation, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message


# The message names violations up to about this many characters and counts the
# rest: a batch of a thousand bad numbers gets a line, not forty kilobytes.
SUMMARY_CHARS = 300


def invalid(violations: Iterable[FieldViolation], message: str | None = None) -> DomainError:
    found = tuple(violations)
    text = message or summary(found) or "invalid request"
    return DomainError(Code.INVALID_ARGUMENT, "VALIDATION_FAILED", text, found)


def summary(violations: tuple[FieldViolation, ...]) -> str:
    """The first violations, "field: why", then how many more there are."""
    parts: list[str] = []
    size = 0
    for shown, v in enumerate(violations):
        part = f"{v.field}: {v.description}"
        if parts and size + len(part) > SUMMARY_CHARS:
            return "; ".join(parts) + f"; and {len(violations) - shown} more"
        parts.append(part)
        size += len(part) + 2
    return "; ".join(parts)


def not_found(kind: str, ident: str) -> DomainError:
    return DomainError(
        Code.NOT_FOUND,
        f"{kind.upper()}_NOT_FOUND",
        f"{kind} {ident!r} not found",
        (),
        {kind: ident},
    )


def failed_precondition(reason: str, message: str) -> DomainError:
    return DomainError(Code.FAILED_PRECONDITION, reason, message)


def already_exists(reason: str, message: str) -> DomainError:
    return DomainError(Code.ALREADY_EXISTS, reason, message)
