"""Checks of a batch send's delivery fields: when, how urgently, and what to report where."""

from __future__ import annotations

from urllib.parse import urlsplit

from server.domain.errors import FieldViolation
from server.domain.limits import RECEIPTS
from server.domain.timeparse import parse_instant

MAX_SCHEDULE_AHEAD_MS = 7 * 24 * 3600 * 1000
# A message still undelivered a month after its send time is not worth sending;
# the bound also keeps expiry times inside a 64-bit column.
MAX_VALIDITY_MS = 30 * 24 * 3600 * 1000
DEFAULT_PRIORITY = 2


def check_schedule(
    send_at: str, expire_at_text: str, validity: int, now: int, problems: list[FieldViolation]
) -> tuple[int, int | None]:
    """The send time and the expiry (ms), from sendAt and expireAt or validity."""
    due_at = now
    if send_at:
        try:
            due_at = max(now, parse_instant(send_at))
        except ValueError:
            problems.append(FieldViolation("sendAt", "must be ISO 8601 or epoch seconds"))
        else:
            if due_at > now + MAX_SCHEDULE_AHEAD_MS:
                problems.append(FieldViolation("sendAt", "at most 7 days ahead"))
    expire_at: int | None = None
    if expire_at_text and validity:
        problems.append(FieldViolation("validity", "expireAt and validity are mutually exclusive"))
    elif expire_at_text:
        try:
            expire_at = parse_instant(expire_at_text)
        except ValueError:
            problems.append(FieldViolation("expireAt", "must be ISO 8601 or epoch seconds"))
        else:
            if expire_at <= due_at:
                problems.append(FieldViolation("expireAt", "must be after the send time"))
            elif expire_at - due_at > MAX_VALIDITY_MS:
                problems.append(FieldViolation("expireAt", "at most 30 days after the send time"))
    elif validity:
        if not 0 < validity * 1000 <= MAX_VALIDITY_MS:
            problems.append(FieldViolation("validity", "must be between 1 second and 30 days"))
        else:
            expire_at = due_at + validity * 1000
    return due_at, expire_at


def check_priority(priority: int, problems: list[FieldViolation]) -> None:
    if priority and not 1 <= priority <= 3:
        problems.append(FieldViolation("priority", "must be 1, 2 or 3"))


def check_receipts(
    kind: str, requested: tuple[str, ...], problems: list[FieldViolation]
) -> tuple[str, ...]:
    allowed = RECEIPTS.get(kind)
    if allowed is None:
        return ()
    chosen: list[str] = []
    for i, name in enumerate(requested):
        status = allowed.get(name.strip().lower())
        if status is None:
            problems.append(
                FieldViolation(
                    f"requestedReceipts[{i}]",
                    f"{name!r} is not a {kind} receipt; use {', '.join(allowed)}",
                )
            )
        elif status not in chosen:
            chosen.append(status)
    return tuple(chosen)


def check_notify_url(url: str, problems: list[FieldViolation]) -> None:
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(FieldViolation("notifyUrl", "must be an absolute http(s) URL"))
