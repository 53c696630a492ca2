"""The content of one inbound message: its CIM body, the text a reader sees, flat details."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.domain.coerce import loose, number
from server.domain.errors import FieldViolation

MEDIA_KINDS = {
    "image": "MEDIA_KIND_IMAGE",
    "video": "MEDIA_KIND_VIDEO",
    "audio": "MEDIA_KIND_AUDIO",
    "voice": "MEDIA_KIND_AUDIO",
    "document": "MEDIA_KIND_FILE",
    "sticker": "MEDIA_KIND_STICKER",
}
_OTHER_TYPES = ("text", "location", "system", "form", "referral")
MESSAGE_TYPES = tuple(sorted({*MEDIA_KINDS, *_OTHER_TYPES}))


def field_text(doc: Mapping[str, Any] | None, key: str) -> str:
    if not isinstance(doc, Mapping):
        return ""
    value = doc.get(key)
    return "" if value is None else str(value)


def infer_type(doc: Mapping[str, Any]) -> str:
    for kind in ("text", *MEDIA_KINDS, "location", "form", "referral"):
        if doc.get(kind):
            return kind
    return ""


Content = tuple[dict[str, Any], str, str, dict[str, Any]]


def message_content(
    kind: str, doc: Mapping[str, Any], path: str, problems: list[FieldViolation]
) -> Content | None:
    """(CIM body, reader text, content type, flat details) for one message."""
    extras: dict[str, Any] = {}
    for key in ("form", "referral"):
        if isinstance(doc.get(key), Mapping) and doc[key]:
            extras[key] = dict(doc[key])
    if kind in MEDIA_KINDS:
        return _media(kind, doc.get(kind), path, problems, extras)
    if kind == "text":
        text = field_text(doc.get("text"), "body")
        if not text:
            problems.append(FieldViolation(f"{path}.text.body", "required for type text"))
            return None
        return {"plain": {"markdownText": text}}, text, "text/plain", extras
    if kind == "location":
        return _location(doc.get("location"), path, problems, extras)
    if kind == "form":
        form = doc.get("form")
        title = field_text(form, "reply_title") or field_text(form, "reply_id")
        if not title:
            problems.append(FieldViolation(f"{path}.form.reply_id", "required for type form"))
            return None
        return {"plain": {"markdownText": title}}, title, "text/plain", extras
    if kind == "referral":
        ref = doc.get("referral")
        if not isinstance(ref, Mapping) or not ref:
            problems.append(FieldViolation(f"{path}.referral", "required for type referral"))
            return None
        url = {
            "url": field_text(ref, "sourceUrl"),
            "title": field_text(ref, "title"),
            "description": field_text(ref, "body"),
        }
        return (
            {"url": url},
            field_text(ref, "body") or field_text(ref, "title"),
            "text/plain",
            extras,
        )
    if kind == "system":
        text = field_text(doc.get("text"), "body")
        return {"plain": {"markdownText": text}}, text, "text/plain", extras
    expected = ", ".join(MESSAGE_TYPES)
    problems.append(FieldViolation(f"{path}.type", f"unknown type {kind!r}; expected {expected}"))
    return None


def _media(
    kind: str, part: Any, path: str, problems: list[FieldViolation], extras: dict[str, Any]
) -> Content | None:
    url = field_text(part, "linkSecure") or field_text(part, "link")
    if not (url or field_text(part, "id")):
        problems.append(
            FieldViolation(f"{path}.{kind}", f"required for type {kind}: link, linkSecure or id")
        )
        return None
    mime, caption = field_text(part, "mime_type"), field_text(part, "caption")
    attachment = {"mediaUrl": url, "mimeType": mime, "fileName": field_text(part, "filename")}
    body = {
        "media": {
            "kind": MEDIA_KINDS[kind],
            "caption": caption,
            "attachment": {k: v for k, v in attachment.items() if v},
        }
    }
    details = {**extras, "mediaUrl": url, "mimeType": mime, "caption": caption}
    return body, caption, mime or "application/octet-stream", compact(details)


def _location(
    loc: Any, path: str, problems: list[FieldViolation], extras: dict[str, Any]
) -> Content | None:
    lat = loose(number, loc.get("latitude"), None) if isinstance(loc, Mapping) else None
    lon = loose(number, loc.get("longitude"), None) if isinstance(loc, Mapping) else None
    if lat is None or lon is None:
        problems.append(
            FieldViolation(f"{path}.location", "latitude and longitude are required numbers")
        )
        return None
    place = {k: field_text(loc, k) for k in ("name", "address", "url")}
    body = {"location": {"latitude": lat, "longitude": lon, **compact(place)}}
    details = {**extras, "latitude": lat, "longitude": lon}
    return body, place["name"] or place["address"], "text/plain", details


def compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in ("", None)}
