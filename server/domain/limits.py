"""Per-channel content rules of the batch send API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from server.domain.errors import FieldViolation
from server.domain.sms_encoding import segments

SMS_TEXT_MAX = 1024
RCS_TEXT_MAX = 3072
WHATSAPP_TEXT_MAX = 4096
EMAIL_HTML_MAX_BYTES = 350 * 1024
EMAIL_ATTACHMENTS_MAX_BYTES = 10 * 1024 * 1024
SUGGESTIONS_PER_MESSAGE = 10
SUGGESTIONS_PER_RICH_CARD = 4
SUGGESTIONS_PER_CAROUSEL_CARD = 2
# Free text the platform stores and echoes back: bounded so that one request
# cannot make every later read of it expensive.
SINGLE_TEXT_MAX = 4096
EMAIL_SUBJECT_MAX = 998  # the longest line RFC 5322 allows
CALLBACK_DATA_MAX = 4096
CORRELATION_ID_MAX = 256
NOTIFY_URL_MAX = 2048
SUBSTITUTION_VALUE_MAX = 4096

# What one message may be once its variables are filled in, by channel type.
# A short text that names a long value many times is refused here, not at the
# provider, and not after it has cost its full size in storage.
# Twilio refuses a body over 1600 characters (error 21617); 10 segments keeps
# GSM-7 text (1530 septets) under that and bounds what one send is billed.
SMS_SEGMENTS_MAX = 10
SMS_BODY_MAX = 1600
# WHATSAPP_TEXT_MAX above: the Cloud API's limit on text.body.
# RCS_TEXT_MAX above: RBM's limit on the text of an agent message.
# Ours, not a provider's: text and html together, well under what SMTP relays
# take (10 MiB and more), so that a rendered body stays cheap to store and read.
EMAIL_BODY_MAX_BYTES = 512 * 1024
# Sandbox, web and any other channel: the single-send text cap.
DEFAULT_BODY_MAX = SINGLE_TEXT_MAX
# Everything a message carries besides its body (subject, suggestions, cards, URLs).
RENDERED_EXTRA_MAX = 64 * 1024
# All the rendered messages of one request together.
RENDER_BUDGET_BYTES = 4 * 1024 * 1024

# Receipt names each channel can report, mapped to the platform's statuses.
_COMMON = {
    "submitted": "SUBMITTED",
    "sent": "SUBMITTED",
    "delivered": "DELIVERED",
    "failed": "FAILED",
}
RECEIPTS: Mapping[str, Mapping[str, str]] = {
    "sms": {**_COMMON, "undelivered": "UNDELIVERED", "clicked": "CLICKED"},
    "email": {
        **_COMMON,
        "not verified": "UNDELIVERED",
        "invalid": "UNDELIVERED",
        "bounced": "UNDELIVERED",
        "complaint": "UNDELIVERED",
        "read": "READ",
        "clicked": "CLICKED",
    },
    "rcs": {**_COMMON, "read": "READ"},
    "whatsapp": {**_COMMON, "read": "READ"},
}

CONTENT_TYPES: Mapping[str, frozenset[str]] = {
    "sms": frozenset({"text", "unicode"}),
    "email": frozenset({"text", "html"}),
    "rcs": frozenset({"text", "media", "standalone", "carousel", "agentEvent"}),
    "whatsapp": frozenset({"text", "image", "document", "audio", "video"}),
}


def check_content(channel: str, content: Mapping[str, Any]) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    kind = content.get("type", "")
    allowed = CONTENT_TYPES[channel]
    if kind not in allowed:
        problems.append(
            FieldViolation("content.type", f"must be one of {', '.join(sorted(allowed))}")
        )
        return problems
    text = content.get("text", "")
    if channel == "sms":
        _need(problems, content, "text")
        max_chars(problems, "content.text", text, SMS_TEXT_MAX)
    elif channel == "email":
        problems.extend(_check_email(content))
    elif channel == "rcs":
        problems.extend(_check_rcs(content))
    elif channel == "whatsapp":
        if kind == "text":
            _need(problems, content, "text")
            max_chars(problems, "content.text", text, WHATSAPP_TEXT_MAX)
        else:
            _need(problems, content, "mediaContentUrl")
    return problems


def _need(
    problems: list[FieldViolation], content: Mapping[str, Any], key: str, why: str = ""
) -> None:
    if not content.get(key):
        problems.append(
            FieldViolation(f"content.{key}", why or f"required for type {content.get('type')}")
        )


def max_chars(problems: list[FieldViolation], path: str, text: str, limit: int) -> None:
    if isinstance(text, str) and len(text) > limit:
        problems.append(FieldViolation(path, f"at most {limit} characters, got {len(text)}"))


def one_line(problems: list[FieldViolation], path: str, text: Any) -> None:
    """Text that becomes a mail header: a line break in it would start a header of its own."""
    if isinstance(text, str) and ("\r" in text or "\n" in text):
        problems.append(FieldViolation(path, "must not contain a line break (CR or LF)"))


def _check_email(content: Mapping[str, Any]) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    _need(problems, content, "subject", "required")
    max_chars(problems, "content.subject", content.get("subject", ""), EMAIL_SUBJECT_MAX)
    one_line(problems, "content.subject", content.get("subject", ""))
    if content["type"] == "text":
        _need(problems, content, "text")
    else:
        _need(problems, content, "html")
    html = content.get("html", "")
    if len(html.encode()) > EMAIL_HTML_MAX_BYTES:
        problems.append(FieldViolation("content.html", f"at most {EMAIL_HTML_MAX_BYTES} bytes"))
    total = 0
    for i, attachment in enumerate(content.get("attachments", [])):
        if not attachment.get("mediaUrl"):
            problems.append(FieldViolation(f"content.attachments[{i}].mediaUrl", "required"))
        if not attachment.get("name"):
            problems.append(FieldViolation(f"content.attachments[{i}].name", "required"))
        total += int(attachment.get("size", 0) or 0)
    if total > EMAIL_ATTACHMENTS_MAX_BYTES:
        problems.append(
            FieldViolation(
                "content.attachments",
                f"declared size {total} exceeds {EMAIL_ATTACHMENTS_MAX_BYTES} bytes",
            )
        )
    return problems


def _check_rcs(content: Mapping[str, Any]) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    kind = content["type"]
    if kind == "text":
        _need(problems, content, "text")
        max_chars(problems, "content.text", content.get("text", ""), RCS_TEXT_MAX)
    elif kind == "media":
        _need(problems, content, "mediaContentUrl")
    elif kind == "standalone":
        _need(problems, content, "richCard")
        card = content.get("richCard") or {}
        _max_items(
            problems,
            "content.richCard.suggestions",
            card.get("suggestions", []),
            SUGGESTIONS_PER_RICH_CARD,
        )
    elif kind == "carousel":
        _need(problems, content, "cards")
        for i, card in enumerate(content.get("cards", [])):
            _max_items(
                problems,
                f"content.cards[{i}].suggestions",
                card.get("suggestions", []),
                SUGGESTIONS_PER_CAROUSEL_CARD,
            )
    elif kind == "agentEvent" and content.get("event") not in ("IS_TYPING", "READ"):
        problems.append(FieldViolation("content.event", "must be IS_TYPING or READ"))
    _max_items(
        problems, "content.suggestions", content.get("suggestions", []), SUGGESTIONS_PER_MESSAGE
    )
    return problems


def _max_items(problems: list[FieldViolation], path: str, items: list[Any], limit: int) -> None:
    if len(items) > limit:
        problems.append(FieldViolation(path, f"at most {limit}, got {len(items)}"))


def check_free_text(
    problems: list[FieldViolation],
    *,
    callback_data: str,
    notify_url: str,
    substitutions: Mapping[str, Any],
    groups: Sequence[tuple[str, Mapping[str, Any]]],
) -> None:
    """Length caps on the free-text fields of a batch send; groups are (correlationId, vars)."""
    max_chars(problems, "callbackData", callback_data, CALLBACK_DATA_MAX)
    max_chars(problems, "notifyUrl", notify_url, NOTIFY_URL_MAX)
    for name, value in substitutions.items():
        max_chars(problems, f"substitutions.{name}", value, SUBSTITUTION_VALUE_MAX)
    for i, (correlation_id, variables) in enumerate(groups):
        max_chars(problems, f"to[{i}].correlationId", correlation_id, CORRELATION_ID_MAX)
        for name, value in variables.items():
            max_chars(problems, f"to[{i}].substitutions.{name}", value, SUBSTITUTION_VALUE_MAX)


def body_keys(kind: str) -> tuple[str, ...]:
    return ("text", "html") if kind.lower() == "email" else ("text",)


def body_limit(kind: str) -> int:
    """A rendered body longer than this many characters is over its cap for certain."""
    return {
        "sms": SMS_BODY_MAX,
        "whatsapp": WHATSAPP_TEXT_MAX,
        "rcs": RCS_TEXT_MAX,
        # UTF-8 spends at least a byte a character.
        "email": EMAIL_BODY_MAX_BYTES,
    }.get(kind.lower(), DEFAULT_BODY_MAX)


def past_body_limit(kind: str) -> str:
    """Why a body that passed ``body_limit`` while rendering is refused."""
    if kind.lower() == "email":
        return f"text and html are more than {EMAIL_BODY_MAX_BYTES} bytes once filled in"
    return f"more than {body_limit(kind)} characters once filled in"


def body_problem(kind: str, parts: Mapping[str, str]) -> str:
    """Why a rendered body is over its channel's cap, or "" when it is not."""
    kind = kind.lower()
    text = parts.get("text", "")
    if kind == "sms":
        if len(text) > SMS_BODY_MAX:
            return f"{len(text)} characters; at most {SMS_BODY_MAX}"
        count = segments(text)
        if count > SMS_SEGMENTS_MAX:
            return f"{count} SMS segments; at most {SMS_SEGMENTS_MAX}"
        return ""
    if kind == "email":
        size = sum(len(parts.get(k, "").encode()) for k in body_keys(kind))
        if size > EMAIL_BODY_MAX_BYTES:
            return f"text and html are {size} bytes; at most {EMAIL_BODY_MAX_BYTES}"
        return ""
    limit = body_limit(kind)
    if len(text) > limit:
        return f"{len(text)} characters; at most {limit}"
    return ""
