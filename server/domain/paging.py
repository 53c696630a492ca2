"""Pages of a list (AIP-158): one opaque, versioned page token for every list.

A token says where the page before ended: the sort key of its last row (the
keyset position), so rows added or removed meanwhile neither repeat nor
shift the rest. It is bound to the list, tenant and filter it was issued
for: passed to another list, or to the same list with other filters, it is
refused, and so is a token that was altered. The binding is a checksum, not
a secret: a position only ever selects among the caller's own rows, so a
forged one would gain nothing.

Layout, before base64url without padding: one version byte, the position
as compact JSON (an array of integers and strings), and an 8-byte BLAKE2b
tag over the list's scope, the version and the position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from server.domain.errors import Code, DomainError, FieldViolation
from server.domain.models import Page

VERSION = 1
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# The API's limit on a page_token; every position a list issues fits in it.
MAX_TOKEN_CHARS = 128
TOKEN_FIELD = "pageToken"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
_TAG_BYTES = 8
_PERSON = b"cimhub.pagetoken"
_INT64 = 2**63
_NOT_OURS = "not a token this server issued"

T = TypeVar("T")
Position = tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page of a list: how many rows, and after which position (None: the first page)."""

    size: int = DEFAULT_PAGE_SIZE
    after: Position | None = None
    # The list, tenant and filter the page belongs to; the next token is bound to it.
    scope: str = ""

    def next_token(self, position: Position) -> str:
        return encode(self.scope, position)

    def cut(self, items: Sequence[T], position_of: Callable[[T], Position]) -> Page[T]:
        """The page from up to size + 1 items read past ``after``; an extra one means more."""
        if len(items) <= self.size:
            return Page(tuple(items))
        kept = tuple(items[: self.size])
        return Page(kept, self.next_token(position_of(kept[-1])))


@dataclass(frozen=True, slots=True)
class Listing:
    """A list of the API: its name and what its positions are made of."""

    name: str
    # The type of each value of a position, in order; a token holding
    # anything else is refused before it reaches a query.
    shape: tuple[type[int] | type[str], ...]

    def request(
        self, tenant_id: str, page_size: int, page_token: str, **filters: object
    ) -> PageRequest:
        """Check a request's page arguments; a bad token is INVALID_PAGE_TOKEN on its field."""
        scope = _scope(self.name, tenant_id, filters)
        problems = []
        if page_size < 0:
            problems.append(FieldViolation("pageSize", "must not be negative"))
        after = None
        if page_token:
            try:
                after = self._position(decode(scope, page_token))
            except ValueError as exc:
                problems.append(FieldViolation(TOKEN_FIELD, str(exc)))
        if problems:
            text = "; ".join(f"{p.field}: {p.description}" for p in problems)
            reason = INVALID_PAGE_TOKEN if page_token and after is None else "VALIDATION_FAILED"
            raise DomainError(Code.INVALID_ARGUMENT, reason, text, tuple(problems))
        return PageRequest(min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), after, scope)

    def _position(self, values: Position) -> Position:
        if len(values) != len(self.shape) or not all(
            _fits(v, kind) for v, kind in zip(values, self.shape, strict=True)
        ):
            raise ValueError(_NOT_OURS)
        return values


def encode(scope: str, position: Position) -> str:
    position_json = json.dumps(list(position), separators=(",", ":"), ensure_ascii=False)
    body = bytes([VERSION]) + position_json.encode()
    token = base64.urlsafe_b64encode(body + _tag(scope, body)).rstrip(b"=").decode()
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"a page position too long for a token: {position!r}")
    return token


def decode(scope: str, token: str) -> Position:
    """The position in a token issued for ``scope``; ValueError says why it is not one."""
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(_NOT_OURS)
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(_NOT_OURS) from None
    body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(body) < 2 or body[0] != VERSION:
        raise ValueError(_NOT_OURS)
    if not hmac.compare_digest(tag, _tag(scope, body)):
        raise ValueError("not a token of this list with these filters")
    try:
        values = json.loads(body[1:].decode())
    except ValueError:
        raise ValueError(_NOT_OURS) from None
    if not isinstance(values, list):
        raise ValueError(_NOT_OURS)
    return tuple(values)


def fingerprint(value: str) -> str:
    """A short stand-in for a sort key value too long to carry in a token."""
    return hashlib.blake2b(value.encode(), digest_size=8, person=_PERSON).hexdigest()


def page_of(items: Sequence[T], key: Callable[[T], str], page: PageRequest) -> Page[T]:
    """A page of a list read whole, in a stable order, each item named uniquely by ``key``.

    Keys may be too long for a token, so the position is the count listed so
    far and a fingerprint of the last key: the next page starts after that
    item wherever it now is. Only if it was deleted since does the count
    place the page, one back for the item that went.
    """
    start = 0
    if page.after is not None:
        listed, last = page.after
        start = next(
            (i + 1 for i, item in enumerate(items) if fingerprint(key(item)) == last),
            max(int(listed) - 1, 0),
        )
    chosen = items[start : start + page.size + 1]
    if len(chosen) <= page.size:
        return Page(tuple(chosen))
    kept = tuple(chosen[: page.size])
    return Page(kept, page.next_token((start + page.size, fingerprint(key(kept[-1])))))


def _scope(name: str, tenant_id: str, filters: Mapping[str, object]) -> str:
    shown = {key: "" if value is None else str(value) for key, value in filters.items()}
    return json.dumps([name, tenant_id, shown], sort_keys=True, separators=(",", ":"))


def _tag(scope: str, body: bytes) -> bytes:
    signed = scope.encode() + b"\x00" + body
    return hashlib.blake2b(signed, digest_size=_TAG_BYTES, person=_PERSON).digest()


def _fits(value: object, kind: type) -> bool:
    if kind is int:
        return type(value) is int and 0 <= value < _INT64
    # Positions hold ids and fingerprints: printable ASCII, which every engine compares.
    return type(value) is str and value.isascii() and value.isprintable()


# Every list of the API. A position is the sort key of a page's last row:
# (creation time, id) for most; (count, fingerprint) for the lists read whole;
# (creation time, count, fingerprint) where ids are too long for a token.
MESSAGES = Listing("messages", (int, str))
SESSIONS = Listing("sessions", (int, str))
SESSION_MESSAGES = Listing("session-messages", (int, str))
ACTIVITIES = Listing("activities", (int, int))
CONSENTS = Listing("consents", (int, str))
DEAD_LETTERS = Listing("dead-letters", (int, int))
CONTACTS = Listing("contacts", (int, int, str))
CUSTOMER_OBJECTS = Listing("customer-objects", (int, int, str))
CUSTOMER_EVENTS = Listing("customer-events", (int,))
GLOBAL_VARS = Listing("global-vars", (int, str))
TEMPLATES = Listing("templates", (int, str))
