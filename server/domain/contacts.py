"""Contacts as channels report them, and how a report updates the stored contact."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import FieldViolation

PROFILE_KEYS = ("email", "name", "phone")
BUSINESS_PROFILE_KEYS = ("email", "name", "phone", "profileId")


@dataclass(frozen=True, slots=True)
class ContactInfo:
    """One InBoundContact: what a channel or the business says about a contact."""

    contact_id: str
    channel_id: str = ""
    contact_type: str = ""
    csid: str = ""
    lane: str = ""
    profile: Mapping[str, str] = field(default_factory=dict)
    business_profile: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Contact:
    tenant_id: str
    contact_id: str
    contact_type: str
    channel_id: str
    csid: str
    lane: str
    profile: Mapping[str, str]
    business_profile: Mapping[str, str]
    created_at: int
    updated_at: int


def contact_info(doc: Mapping[str, Any], path: str, problems: list[FieldViolation]) -> ContactInfo:
    """An InBoundContact from its JSON form; missing required fields go to problems."""
    contact_id = str(doc.get("contactId", ""))
    channel_id = str(doc.get("channelId", ""))
    if not contact_id:
        problems.append(FieldViolation(f"{path}.contactId", "required"))
    if not channel_id:
        problems.append(FieldViolation(f"{path}.channelId", "required"))
    return ContactInfo(
        contact_id=contact_id,
        channel_id=channel_id,
        contact_type=str(doc.get("contactType", "")).removeprefix("CONTACT_TYPE_"),
        csid=str(doc.get("csid", "")),
        lane=str(doc.get("lane", "")),
        profile=_pick(doc.get("profile"), PROFILE_KEYS),
        business_profile=_pick(doc.get("businessProfile"), BUSINESS_PROFILE_KEYS),
    )


def _pick(value: Any, keys: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {k: str(value[k]) for k in keys if value.get(k) not in (None, "")}


def merge(existing: Contact | None, info: ContactInfo, tenant_id: str, now: int) -> Contact:
    """Apply a report: given values replace stored ones, missing values keep them.

    Profiles merge key by key, so a report with only a new email keeps the name.
    """
    if existing is None:
        return Contact(
            tenant_id=tenant_id,
            contact_id=info.contact_id,
            contact_type=info.contact_type,
            channel_id=info.channel_id,
            csid=info.csid,
            lane=info.lane,
            profile=dict(info.profile),
            business_profile=dict(info.business_profile),
            created_at=now,
            updated_at=now,
        )
    return Contact(
        tenant_id=tenant_id,
        contact_id=existing.contact_id,
        contact_type=info.contact_type or existing.contact_type,
        channel_id=info.channel_id or existing.channel_id,
        csid=info.csid or existing.csid,
        lane=info.lane or existing.lane,
        profile={**existing.profile, **info.profile},
        business_profile={**existing.business_profile, **info.business_profile},
        created_at=existing.created_at,
        updated_at=now,
    )
