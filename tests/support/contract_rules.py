"""The rules /openapi.json cannot state, for the tests that hold the server to it.

A JSON Schema judges one value at a time against fixed rules. The server also
refuses requests for what is stored (a channel id no channel has, a page token
it did not issue) and for how two values relate (an end before a start, a
message whose contactId names none of the contacts sent with it). A request
the document calls valid that breaks only such rules is a 400 naming the rule;
each kind is listed here with why the document cannot say it, and a 400 that
names anything else is a mismatch between the document and the server.

Field-local rules have no place here: they are declared on the proto field
(REQUIRED, max_length, pattern, minimum, maximum), which the field guard
enforces and the document publishes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ANY = ".*"
_RECEIVE = "POST /api/v1/message/receive"
_ACTIVITY = "POST /api/v1/conversation/activities"
_CHANNELS = r"(POST|PUT) /api/v1/config/channels.*"


@dataclass(frozen=True)
class Unstated:
    operations: str  # regex on "METHOD /path"
    field: str  # regex on the refusal's field (a JSON path), "" for the request
    description: str  # regex on the field's description, or on messageKey
    why: str


UNSTATED: tuple[Unstated, ...] = (
    # -- what is stored -----------------------------------------------------------------
    Unstated(ANY, "pageToken", "not a token this server issued", "page tokens are opaque"),
    Unstated(ANY, "after", "not a cursor this server issued", "stream cursors are opaque"),
    Unstated(
        ANY, r"(fallback\[\d+\]\.)?channelId", "unknown channel", "channels are made at run time"
    ),
    Unstated(ANY, "channel", "no .* channel is configured", "channels are made at run time"),
    Unstated(ANY, r"template(\.id)?", "unknown template", "templates are made at run time"),
    Unstated(ANY, "channelId", "is not available", "another tenant holds the id"),
    Unstated(ANY, r"to\.(phone|email)", ANY, "the channel's type decides the address"),
    Unstated(ANY, r"to\[\d+\](\.\w+(\[\d+\])?)?", ANY, "the channel decides the address list"),
    Unstated(ANY, "", "WEBHOOK_NOT_SET", "the tenant's webhook URL is set by another call"),
    Unstated(_CHANNELS, r"settings(\.\w+)?", ANY, "each provider's adapter has its own settings"),
    Unstated(ANY, "sendAt", "at most 7 days ahead", "relative to the time of the call"),
    # -- how values relate --------------------------------------------------------------
    Unstated(ANY, "endTime", "must be after startTime", "compares two fields"),
    Unstated(ANY, "expireAt|validity", ANY, "compares expiry with the send time"),
    Unstated(ANY, r"sendAt|expireAt", "must be ISO 8601 or epoch seconds", "two forms, both dated"),
    Unstated(
        ANY, "notifyUrl|url", "absolute http\\(s\\) URL|scheme", "a URL's parts, not its text"
    ),
    Unstated(ANY, r"(cc|bcc)\[\d+\]", ANY, "email syntax as the address parser reads it"),
    Unstated(ANY, "address", "not a valid", "the channel type in the path decides the kind"),
    Unstated(ANY, "to", "one of phone, email or contactId is required", "one of three fields"),
    Unstated(ANY, "to", "at least one destination address", "counts addresses across groups"),
    Unstated(ANY, ANY, r"required for type|not used on|not a field of", "depends on the type"),
    Unstated(
        ANY, r"(content|template)(\.\w+)?", "content or template|mutually exclusive", "one of two"
    ),
    Unstated(ANY, r"fallback\[\d+\]\.\w+", ANY, "a chain's legs depend on each other"),
    Unstated(ANY, "skills", "empty skills", "no schema keyword bars an empty list item"),
    Unstated(ANY, r"requestedReceipts\[\d+\]", "is not a .* receipt", "the channel decides"),
    Unstated(ANY, r"content\.type", "must be one of", "the channel decides the content types"),
    Unstated(
        "PUT /api/v1/consent-settings",
        r"settings\.\w+Keywords",
        "has no letters or digits",
        "a Unicode letter or digit: JSON Schema's regex dialect has no class for it",
    ),
    # The inbound webhook: each message refers to the contacts sent with it, and
    # its type (given, or read from its content) says which content it needs.
    Unstated(
        _RECEIVE, r"messages\[\d+\]\.contactId", "matches no entry of contacts", "a reference"
    ),
    Unstated(
        _RECEIVE, r"messages\[\d+\]\.from", "the sender's address|letters are not", "or contactId"
    ),
    Unstated(_RECEIVE, r"(messages|statuses)\[\d+\]\.id", "id or messageIdExt", "one of two"),
    Unstated(_RECEIVE, r"messages\[\d+\]\.type", "unknown type", "read from the content"),
    Unstated(_RECEIVE, r"messages\[\d+\]\.location", "required numbers", "numbers in text"),
    # Activities: a CIM message names a sender and one anchor, and its body one content.
    Unstated(_ACTIVITY, r"activity\.header\.sender", "id or type", "one of two"),
    Unstated(_ACTIVITY, r"activity\.header\.\w+", "one of customer", "one of three"),
    Unstated(_ACTIVITY, r"activity\.body", "one content type", "no member of a oneof"),
    Unstated(_ACTIVITY, r"activity\.body\.\w+", "a public-form field|unknown type", "by type"),
)


# What the JSON mapping and the field guard say: rules the document states, so
# never excused whichever field they name.
_STATED = re.compile(
    r"must not contain NUL|at most \d+ characters|keys at most|must match |"
    r"must be at (least|most) -?\d|^expected (a|an) |unknown field|out of range|"
    r"given twice|only one of "
)


def unstated_only(operation: str, status: int, body: Any) -> bool:
    """Whether ``body`` (a 400 answer) refuses only for rules listed in UNSTATED."""
    if status != 400 or not isinstance(body, dict):
        return False
    key = str(body.get("messageKey", ""))
    errors = body.get("errors") or [{"field": "", "description": ""}]
    rules = [r for r in UNSTATED if re.fullmatch(r.operations, operation)]

    def excused(error: dict[str, Any]) -> bool:
        field, description = str(error.get("field", "")), str(error.get("description", ""))
        if _STATED.search(description):
            return False
        return any(
            re.fullmatch(r.field, field) and re.search(r.description, f"{description} {key}")
            for r in rules
        )

    return all(excused(e) for e in errors)


def reported_refusal(operation: str, status: int, body: Any) -> bool:
    """A dry run answers 200 describing the refusal a send would give: by design,
    a body the document calls invalid is not refused there when the refusal is
    reported in meta.refusal."""
    return (
        operation == "POST /api/v2/message/validate"
        and status == 200
        and isinstance(body, dict)
        and bool((body.get("meta") or {}).get("refusal"))
    )
