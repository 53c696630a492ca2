"""A dry run's answer for one destination: what a send would render, cost and refuse."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.domain.coerce import as_text
from server.domain.content import parse_content
from server.domain.errors import DomainError, FieldViolation
from server.domain.models import Channel
from server.domain.smart_encoding import Replacement, replacements_in, smart_encode
from server.domain.sms_encoding import encoding_of, segments, ucs2_characters

# What a dry run says of an address no consent ledger speaks for.
CONSENT_UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class SmartEncodingEffect:
    applied: bool
    replacements: tuple[Replacement, ...]
    encoding_before: str
    encoding_after: str
    segments_before: int
    segments_after: int

    @property
    def segments_saved(self) -> int:
        return self.segments_before - self.segments_after


@dataclass(frozen=True, slots=True)
class SmsEstimate:
    text: str
    encoding: str
    segments: int
    ucs2_characters: tuple[str, ...]
    smart_encoding: SmartEncodingEffect


@dataclass(frozen=True, slots=True)
class DestinationCheck:
    correlation_id: str
    destination: str
    sendable: bool
    error: str = ""
    errors: tuple[FieldViolation, ...] = ()
    channel_id: str = ""
    route: tuple[str, ...] = ()
    type: str = ""
    text: str = ""
    sms: SmsEstimate | None = None
    consent: str = CONSENT_UNKNOWN


@dataclass(frozen=True, slots=True)
class BatchCheck:
    results: tuple[DestinationCheck, ...]
    # The error the send would answer with, when it would refuse the whole body.
    refusal: DomainError | None = None


def sms_estimate(rendered: str, applied: bool) -> SmsEstimate:
    """``rendered`` is the text before smart encoding; ``applied``, whether the send asks for it."""
    after = smart_encode(rendered)
    sent = after if applied else rendered
    return SmsEstimate(
        text=sent,
        encoding=encoding_of(sent),
        segments=segments(sent),
        ucs2_characters=tuple(ucs2_characters(sent)),
        smart_encoding=SmartEncodingEffect(
            applied=applied,
            replacements=tuple(replacements_in(rendered)),
            encoding_before=encoding_of(rendered),
            encoding_after=encoding_of(after),
            segments_before=segments(rendered),
            segments_after=segments(after),
        ),
    )


def sms_fallback(channel: Channel, content: Mapping[str, Any]) -> tuple[str, str] | None:
    """The SMS channel and text an RCS message falls back to, if it would.

    As the RBM adapter does it (the one adapter that falls back): asked for
    with options.smsFallback, on a channel that names its
    sms_fallback_channel, with options.text or the message's own text.
    """
    typed = parse_content(content)
    target = as_text(channel.settings.get("sms_fallback_channel"))
    if channel.provider != "rbm" or not target or not typed.options.sms_fallback:
        return None
    return target, typed.options.fallback_text or typed.text


def names_destination(violation: FieldViolation, group: int, path: str) -> bool:
    """Whether a refusal is about this address: its own path, or its group's."""
    where = violation.field
    return where == path or where in (f"to[{group}]", f"to[{group}].msisdn", f"to[{group}].email")
