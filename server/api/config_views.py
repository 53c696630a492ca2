"""ConfigService's conversions: channels, global variables and templates, proto in and out.

A channel's settings go out with every credential-like value redacted, and a
redacted value sent back is refused rather than stored over the real one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.json_format import MessageToDict

from cim.v1 import config_service_pb2 as pb
from server.api import field_rules
from server.channels import ChannelEntry
from server.domain.customer import GlobalVar, TemplateRecord, check_template
from server.domain.errors import FieldViolation, invalid
from server.domain.models import Channel

REDACTED = "***"
_SECRET_WORDS = ("secret", "token", "password", "passwd", "key", "credential", "auth")
_CHANNEL_ID = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,128}$")
STATUS_NAMES = {
    pb.TEMPLATE_APPROVAL_STATUS_APPROVED: "APPROVED",
    pb.TEMPLATE_APPROVAL_STATUS_PENDING: "PENDING",
    pb.TEMPLATE_APPROVAL_STATUS_REJECTED: "REJECTED",
}
_STATUS_VALUES = {v: k for k, v in STATUS_NAMES.items()}
_OPERATOR_PROBLEM = "the channel is not serving; the operator's log says why"


def redact(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with every credential-like value hidden, at any depth."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if any(word in k.lower() for word in _SECRET_WORDS):
            out[k] = REDACTED
        elif isinstance(v, Mapping):
            out[k] = redact(v)
        else:
            out[k] = v
    return out


def channel_to_proto(entry: ChannelEntry) -> pb.Channel:
    c = entry.channel
    reply = pb.Channel(
        channel_id=c.channel_id,
        contact_type=c.contact_type,
        lane=c.lane,
        name=c.name,
        provider=c.provider,
        sandbox=c.sandbox,
        tps=c.tps,
        max_in_flight=c.max_in_flight,
        read_only=entry.from_file,
        state=pb.CHANNEL_STATE_SERVING if entry.healthy else pb.CHANNEL_STATE_FAILED,
        state_reason=_state_reason(entry),
    )
    # An operator's settings (internal hosts, server paths, variable names)
    # are no tenant's business; a tenant sees its own, credentials redacted.
    if c.settings and not entry.from_file:
        reply.settings.update(_json_safe(redact(c.settings)))
    return reply


def _state_reason(entry: ChannelEntry) -> str:
    if entry.healthy:
        return ""
    # The diagnosis of an operator's channel may name server files or variables.
    return _OPERATOR_PROBLEM if entry.from_file else entry.problem


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def channel_from_proto(m: pb.Channel) -> Channel:
    problems = []
    if m.channel_id and not _CHANNEL_ID.match(m.channel_id):
        problems.append(FieldViolation("channelId", "1 to 128 letters, digits or _.:@+-"))
    if m.tps < 0:
        problems.append(FieldViolation("tps", "must not be negative"))
    if m.max_in_flight < 0:
        problems.append(FieldViolation("maxInFlight", "must not be negative"))
    settings = MessageToDict(m.settings) if m.HasField("settings") else {}
    if REDACTED in _leaves(settings):
        # A redacted copy sent back must not overwrite the real credential.
        problems.append(FieldViolation("settings", "send credentials in full, not redacted"))
    field_rules.check(m, problems)
    return Channel(
        channel_id=m.channel_id,
        contact_type=m.contact_type.upper(),
        provider=m.provider,
        lane=m.lane,
        name=m.name,
        sandbox=m.sandbox or m.provider == "sandbox",
        tps=m.tps,
        max_in_flight=m.max_in_flight or 64,
        settings=settings,
    )


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def check_webhook_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or len(url) > 2048:
        raise invalid([FieldViolation("url", "must be an absolute http(s) URL")])


def var_to_proto(v: GlobalVar) -> pb.GlobalVar:
    return pb.GlobalVar(
        id=f"{v.channel_id}:{v.key}" if v.channel_id else v.key,
        key=v.key,
        value=v.value,
        description=v.description,
        channel_id=v.channel_id,
        type="CHANNEL" if v.channel_id else "TENANT",
        updated_stamp=v.updated_at,
    )


def template_to_proto(t: TemplateRecord) -> pb.Template:
    return pb.Template(
        id=t.id,
        code=t.code,
        lang=t.lang,
        category=t.category,
        header=t.header,
        body=t.body,
        footer=t.footer,
        buttons=[
            pb.TemplateButton(
                type=str(b.get("type", "")),
                label=str(b.get("label", "")),
                code=str(b.get("code", "")),
                url=str(b.get("url", "")),
                phone=str(b.get("phone", "")),
            )
            for b in t.buttons
        ],
        approved=[
            pb.TemplateApproval(
                channel_id=channel_id, status=_STATUS_VALUES[status], template_id=t.id
            )
            for channel_id, status in sorted(t.approvals.items())
        ],
        created_stamp=t.created_at,
    )


def template_from_proto(m: pb.Template, template_id: str = "") -> TemplateRecord:
    approvals: dict[str, str] = {}
    problems = []
    for i, a in enumerate(m.approved):
        status = STATUS_NAMES.get(a.status)
        if status is None:
            problems.append(
                FieldViolation(f"approved[{i}].status", "must be APPROVED, PENDING or REJECTED")
            )
            continue
        approvals[a.channel_id] = status
    field_rules.check(m, problems, check_template(m.code, m.lang, m.body, approvals))
    return TemplateRecord(
        id=template_id,
        code=m.code,
        lang=m.lang,
        body=m.body,
        category=m.category,
        header=m.header,
        footer=m.footer,
        buttons=tuple(
            {"type": b.type, "label": b.label, "code": b.code, "url": b.url, "phone": b.phone}
            for b in m.buttons
        ),
        approvals=approvals,
    )
