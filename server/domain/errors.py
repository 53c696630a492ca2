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


def invalid(violations: Iterable[FieldViolation], message: str | None = None) -> DomainError:
    found = tuple(violations)
    text = message or "; ".join(f"{v.field}: {v.description}" for v in found) or "invalid request"
    return DomainError(Code.INVALID_ARGUMENT, "VALIDATION_FAILED", text, found)


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
