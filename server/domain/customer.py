"""Configuration and customer data the tenant manages: variables, templates,
contact preferences, customer objects and events."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.domain.errors import FieldViolation, failed_precondition
from server.domain.events import EventType, NewEvent
from server.domain.models import conversation_for

VAR_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
APPROVAL_STATUSES = ("APPROVED", "PENDING", "REJECTED")
# Link types that name the contact a customer object or event belongs to.
CONTACT_LINK_TYPES = frozenset({"contact", "contactid", "contact_id"})
MAX_ID = 256


@dataclass(frozen=True, slots=True)
class GlobalVar:
    key: str
    value: str
    description: str = ""
    channel_id: str = ""  # "" for the tenant-wide value
    updated_at: int = 0


def effective_vars(stored: Iterable[GlobalVar], channel_id: str) -> dict[str, GlobalVar]:
    """The variables that apply on a channel: its own values override the tenant's."""
    tenant: dict[str, GlobalVar] = {}
    channel: dict[str, GlobalVar] = {}
    for v in stored:
        if not v.channel_id:
            tenant[v.key] = v
        elif v.channel_id == channel_id:
            channel[v.key] = v
    return {**tenant, **channel}


def var_values(stored: Iterable[GlobalVar], channel_id: str) -> dict[str, str]:
    return {k: v.value for k, v in effective_vars(stored, channel_id).items()}


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """A template with everything the API shows; sends use ``batch.Template``."""

    id: str
    code: str
    lang: str
    body: str
    category: str = ""
    header: str = ""
    footer: str = ""
    buttons: Sequence[Mapping[str, Any]] = ()
    approvals: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0


def check_template(
    code: str, lang: str, body: str, approvals: Mapping[str, str]
) -> list[FieldViolation]:
    problems = []
    if not code:
        problems.append(FieldViolation("code", "required"))
    elif len(code) > 128:
        problems.append(FieldViolation("code", "at most 128 characters"))
    if not lang:
        problems.append(FieldViolation("lang", "required"))
    elif len(lang) > 32:
        problems.append(FieldViolation("lang", "at most 32 characters"))
    if not body:
        problems.append(FieldViolation("body", "required"))
    for i, (channel_id, status) in enumerate(approvals.items()):
        if not channel_id:
            problems.append(FieldViolation(f"approved[{i}].channelId", "required"))
        if status not in APPROVAL_STATUSES:
            problems.append(
                FieldViolation(f"approved[{i}].status", "must be APPROVED, PENDING or REJECTED")
            )
    return problems


def require_approved(code: str, approvals: Mapping[str, str], channel_id: str) -> None:
    status = approvals.get(channel_id, "PENDING")
    if status != "APPROVED":
        raise failed_precondition(
            "TEMPLATE_NOT_APPROVED", f"template {code!r} is {status} on channel {channel_id}"
        )


def check_var(key: str, value: str) -> list[FieldViolation]:
    problems = []
    if not VAR_KEY.match(key):
        problems.append(
            FieldViolation("key", "1 to 128 letters, digits, '_', '.' or '-' characters")
        )
    if len(value) > 4096:
        problems.append(FieldViolation("value", "at most 4096 characters"))
    return problems


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    type: str
    value: str


def contact_of(links: Sequence[Link]) -> str:
    for link in links:
        if link.type.strip().lower() in CONTACT_LINK_TYPES and link.value:
            return link.value
    return ""


@dataclass(frozen=True, slots=True)
class CustomerObject:
    id: str
    type: str
    data: Mapping[str, Any]
    links: Sequence[Link]
    contact_id: str = ""
    updated_at: int = 0


@dataclass(frozen=True, slots=True)
class CustomerEvent:
    event_name: str
    id: str
    links: Sequence[Link]
    contact_id: str = ""
    created_at: int = 0
    seq: int = 0


# Customer events are sequenced per contact (or per event id) in a
# conversation of this pseudo-channel.
CUSTOMER_EVENTS_CHANNEL = "customer-events"


def links_json(links: Sequence[Link]) -> list[dict[str, str]]:
    return [{"linkName": x.name, "linkType": x.type, "linkValue": x.value} for x in links]


def customer_event(tenant_id: str, e: CustomerEvent) -> NewEvent:
    """The live-stream event a stored customer event is reported by."""
    return NewEvent(
        conversation_id=conversation_for(tenant_id, CUSTOMER_EVENTS_CHANNEL, e.contact_id or e.id),
        type=EventType.CUSTOMER,
        originator_id=tenant_id,
        originator_role="TENANT",
        message=e.event_name,
        customer_id=e.contact_id,
        data={"eventName": e.event_name, "id": e.id, "links": links_json(e.links)},
    )


@dataclass(frozen=True, slots=True)
class ContactPrefs:
    contact_id: str
    lang: str
    updated_at: int = 0


def text_value(value: Any) -> str:
    """A JSON value as substitution text: 10, not 10.0, for whole numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))
