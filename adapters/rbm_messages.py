"""RBM's AgentMessage, built from rendered content: text, media, rich cards, suggestions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from server.domain.content import Media, MessageContent, RichCard, Suggestion
from server.domain.timeparse import parse_instant

_ORIENTATIONS = ("VERTICAL", "HORIZONTAL")
_ALIGNMENTS = ("LEFT", "RIGHT")
_HEIGHTS = ("SHORT", "MEDIUM", "TALL")
_WIDTHS = ("SMALL", "MEDIUM")


class ContentError(ValueError):
    """The delivery's content cannot be expressed as an RBM message."""


def agent_message(content: MessageContent, expire_at: int | None = None) -> dict[str, Any]:
    """The AgentMessage for one rendered RCS content (anything but agentEvent)."""
    kind = content.type
    message: dict[str, Any] = {}
    if kind == "text":
        message["text"] = _required(content.text, "text")
    elif kind == "media":
        media = content.media or Media()
        message["contentInfo"] = _content_info(
            _required(media.url, "mediaContentUrl"), media.thumbnail_url
        )
    elif kind == "standalone":
        if content.rich_card is None:
            raise ContentError("richCard must be an object")
        message["richCard"] = {"standaloneCard": _standalone(content.rich_card)}
    elif kind == "carousel":
        if not content.cards:
            raise ContentError("a carousel needs cards")
        message["richCard"] = {
            "carouselCard": {
                "cardWidth": _enum(content.card_width, _WIDTHS, "MEDIUM"),
                "cardContents": [_card_content(card) for card in content.cards],
            }
        }
    else:
        raise ContentError(f"unsupported RCS content type {kind!r}")
    suggestions = [_suggestion(item) for item in content.suggestions]
    if suggestions:
        message["suggestions"] = suggestions
    body: dict[str, Any] = {"contentMessage": message}
    if expire_at is not None:
        # RBM withdraws the message undelivered at this time and says so by webhook.
        body["expireTime"] = _rfc3339(expire_at)
    return body


def _standalone(card: RichCard) -> dict[str, Any]:
    orientation = _enum(card.orientation, _ORIENTATIONS, "VERTICAL")
    out: dict[str, Any] = {"cardOrientation": orientation}
    # RBM only aligns the image of horizontal cards; for vertical ones it means nothing.
    if orientation == "HORIZONTAL" and card.thumbnail_alignment:
        out["thumbnailImageAlignment"] = _enum(card.thumbnail_alignment, _ALIGNMENTS, "")
    out["cardContent"] = _card_content(card)
    return out


def _card_content(card: RichCard) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if card.title:
        out["title"] = card.title
    if card.description:
        out["description"] = card.description
    if card.media is not None:
        out["media"] = {
            "height": _enum(card.media.height, _HEIGHTS, "MEDIUM"),
            "contentInfo": _content_info(
                _required(card.media.url, "url"), card.media.thumbnail_url
            ),
        }
    if not out:
        raise ContentError("a rich card needs a title, a description or media")
    suggestions = [_suggestion(item) for item in card.suggestions]
    if suggestions:
        out["suggestions"] = suggestions
    return out


def _content_info(url: str, thumbnail: str) -> dict[str, Any]:
    info: dict[str, Any] = {"fileUrl": url}
    if thumbnail:
        info["thumbnailUrl"] = thumbnail
    # RBM caches fetched files by URL; our URLs name fixed content, so the cache is right.
    info["forceRefresh"] = False
    return info


def _suggestion(item: Suggestion) -> dict[str, Any]:
    text = _required(item.display_text, "displayText")
    # RBM echoes postbackData when the chip is tapped; without one, the label will do.
    postback = item.postback_data or text
    if item.type == "reply":
        return {"reply": {"text": text, "postbackData": postback}}
    action: dict[str, Any] = {"text": text, "postbackData": postback}
    if item.fallback_url:
        action["fallbackUrl"] = item.fallback_url
    if item.type == "viewLocation":
        action["viewLocationAction"] = _view_location(item)
    elif item.type == "shareLocation":
        action["shareLocationAction"] = {}
    elif item.type == "openUrl":
        action["openUrlAction"] = {"url": _required(item.url, "url")}
    elif item.type == "calendarEvent":
        event = {
            "startTime": _timestamp(_required(item.start_time, "startTime")),
            "endTime": _timestamp(_required(item.end_time, "endTime")),
            "title": item.meeting_title or text,
        }
        if item.meeting_description:
            event["description"] = item.meeting_description
        action["createCalendarEventAction"] = event
    elif item.type == "dialPhone":
        action["dialAction"] = {"phoneNumber": _required(item.phone, "phone")}
    else:
        raise ContentError(f"unsupported suggestion type {item.type!r}")
    return {"action": action}


def _view_location(item: Suggestion) -> dict[str, Any]:
    label = item.label or item.address
    if item.latitude is not None and item.longitude is not None:
        view: dict[str, Any] = {"latLong": {"latitude": item.latitude, "longitude": item.longitude}}
        if label:
            view["label"] = label
        return view
    if label:
        # No coordinates: let the maps app search for the address instead.
        return {"query": label}
    raise ContentError("viewLocation needs latitude and longitude, or an address")


def _enum(value: Any, allowed: tuple[str, ...], default: str) -> str:
    """Maps "VERTICAL/HORIZONTAL"-style placeholders to their first valid alternative."""
    if value is None or value == "":
        return default
    for alternative in str(value).upper().split("/"):
        if alternative.strip() in allowed:
            return alternative.strip()
    raise ContentError(f"{value!r} is not one of {', '.join(allowed)}")


def _required(value: str, name: str) -> str:
    if not value:
        raise ContentError(f"{name} is required")
    return value


def _timestamp(value: str) -> str:
    """Calendar times as RBM's RFC 3339 UTC, from ISO 8601 or epoch input."""
    try:
        return _rfc3339(parse_instant(value))
    except ValueError as exc:
        raise ContentError(f"{value!r} is not a time") from exc


def _rfc3339(millis: int) -> str:
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
