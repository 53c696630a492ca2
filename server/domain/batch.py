"""Planning a batch send: validate the request, then one draft per destination address."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.addresses import AddressError, normalize_email, normalize_msisdn
from server.domain.delivery_fields import (
    DEFAULT_PRIORITY,
    check_notify_url,
    check_priority,
    check_receipts,
    check_schedule,
)
from server.domain.errors import FieldViolation, failed_precondition, invalid
from server.domain.fallback import FallbackStep
from server.domain.limits import (
    RENDER_BUDGET_BYTES,
    RENDERED_EXTRA_MAX,
    body_keys,
    body_limit,
    body_problem,
    check_content,
    check_free_text,
    one_line,
    past_body_limit,
)
from server.domain.models import Channel, OutboundDraft, conversation_for, new_id
from server.domain.smart_encoding import smart_encode
from server.domain.substitution import MissingVariables, TooLong, render_text, render_tree

MAX_DESTINATIONS = 1000
_ADDRESS_FIELD = {"sms": "msisdn", "rcs": "msisdn", "whatsapp": "msisdn", "email": "email"}
_ID_NAMESPACE = uuid.UUID("0e6f2f0a-58b8-4cde-9a3c-1b1c4b0c2d77")


@dataclass(frozen=True, slots=True)
class BatchGroup:
    msisdn: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    correlation_id: str = ""
    substitutions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchSend:
    """A batch send in the public API's terms (JSON field names, JSON-like values)."""

    channel: str
    from_address: str
    groups: tuple[BatchGroup, ...]
    substitutions: Mapping[str, str] = field(default_factory=dict)
    send_at: str = ""
    expire_at: str = ""
    validity: int = 0
    priority: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    callback_data: str = ""
    notify_url: str = ""
    requested_receipts: tuple[str, ...] = ()
    content: Mapping[str, Any] | None = None
    template: Mapping[str, Any] | None = None
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    appid: str = ""
    # The deadline fallback chain after the batch's own channel; () without one.
    fallback: tuple[FallbackStep, ...] = ()
    # What the message is (marketing, transactional, …), for the consent ledger.
    category: str = ""


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    code: str
    lang: str
    body: str
    header: str = ""
    footer: str = ""
    approvals: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlannedDestination:
    correlation_id: str
    destination: str
    draft: OutboundDraft | None
    error: str = ""


def derived_message_id(tenant_id: str, key: str, group: int, index: int) -> str:
    """A retried batch with the same idempotency key yields the same ids."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{tenant_id}\x1f{key}\x1f{group}\x1f{index}"))


def batch_id(tenant_id: str, idempotency_key: str = "") -> str:
    """A new batch's id; a retry with the same idempotency key gets the same one."""
    if not idempotency_key:
        return new_id()
    return str(uuid.uuid5(_ID_NAMESPACE, f"{tenant_id}\x1f{idempotency_key}\x1fbatch"))


def pick_channel(kind: str, from_address: str, channels: Mapping[str, Channel]) -> Channel | None:
    matching = [c for c in channels.values() if c.contact_type.lower() == kind]
    for c in matching:
        if c.lane == from_address:
            return c
    return matching[0] if matching else None


def plan_batch(
    tenant_id: str,
    send: BatchSend,
    channels: Mapping[str, Channel],
    now: int,
    *,
    template: Template | None = None,
    tenant_vars: Mapping[str, str] | None = None,
    idempotency_key: str = "",
    by_destination: Mapping[str, Template] | None = None,
    request_id: str = "",
    batch: str = "",
    consent_category: str | None = None,
) -> list[PlannedDestination]:
    """``by_destination`` overrides ``template`` per normalised address: the same
    code in the language each contact prefers. ``request_id`` and ``batch`` are
    stamped on every draft as it is made (a copy per destination costs more than
    the rest of its draft), and so, unless ``consent_category`` is None, is the
    mark the consent screen would give it (the channel's type and that category)."""
    problems: list[FieldViolation] = []
    kind = send.channel.lower()
    channel = _check_channel(kind, send, channels, problems)
    addresses = _check_destinations(kind, send.groups, problems)
    due_at, expire_at = check_schedule(send.send_at, send.expire_at, send.validity, now, problems)
    check_priority(send.priority, problems)
    receipts = check_receipts(kind, send.requested_receipts, problems)
    check_notify_url(send.notify_url, problems)
    check_free_text(
        problems,
        callback_data=send.callback_data,
        notify_url=send.notify_url,
        substitutions=send.substitutions,
        groups=[(g.correlation_id, g.substitutions) for g in send.groups],
    )
    _check_body(kind, send, template, problems)
    if kind == "email":
        one_line(problems, "options.fromName", send.options.get("fromName", ""))
        for name, listed in (("cc", send.cc), ("bcc", send.bcc)):
            for i, value in enumerate(listed):
                try:
                    normalize_email(value)
                except AddressError as exc:
                    problems.append(FieldViolation(f"{name}[{i}]", str(exc)))
    if problems or channel is None:
        raise invalid(problems)
    chosen = dict(by_destination or {})
    for t in {id(t): t for t in (template, *chosen.values()) if t is not None}.values():
        status = t.approvals.get(channel.channel_id, "PENDING")
        if status != "APPROVED":
            raise failed_precondition(
                "TEMPLATE_NOT_APPROVED",
                f"template {t.code!r} ({t.lang}) is {status} on channel {channel.channel_id}",
            )

    shared: dict[str, Any] = {"from": send.from_address, "options": dict(send.options)}
    if send.cc or send.bcc:
        shared.update(cc=list(send.cc), bcc=list(send.bcc))
    if send.appid:
        shared["appid"] = send.appid
    base_vars = {**(tenant_vars or {}), **send.substitutions}
    smart = kind == "sms" and bool(send.options.get("smartEncoding"))
    planned: list[PlannedDestination] = []
    spent = 0
    consent_type = channel.contact_type.upper() if consent_category is not None else ""
    # A body without placeholders renders the same for every destination:
    # rendered once per template (or for the content), and that one dict is
    # every such draft's content, as drafts never change theirs (storing it
    # then encodes it once).
    same_for_all: dict[int, tuple[dict[str, Any], str, int]] = {}
    for gi, index, group, address in addresses:
        source = chosen.get(address, template)
        rendered = same_for_all.get(id(source))
        if rendered is None:
            values = {
                **_builtins(kind, send.from_address, address),
                **base_vars,
                **group.substitutions,
            }
            try:
                content, text = _render(kind, send, source, values, smart)
            except MissingVariables as exc:
                planned.append(PlannedDestination(group.correlation_id, address, None, str(exc)))
                continue
            except _Overflow as exc:
                # Nothing is stored: a destination's own values name it, shared ones the field.
                if group.substitutions:
                    why = f"{exc.path}, with this destination's substitutions: {exc}"
                    raise invalid([FieldViolation(f"to[{gi}]", why)]) from None
                raise invalid([FieldViolation(exc.path, str(exc))]) from None
            size = _size(content)
            content = {**content, **shared}
            if not _has_placeholders(source.body if source is not None else send.content):
                same_for_all[id(source)] = (content, text, size)
        else:
            content, text, size = rendered
        spent += size
        if spent > RENDER_BUDGET_BYTES:
            raise invalid(
                [
                    FieldViolation(
                        "to",
                        f"the rendered messages come to more than {RENDER_BUDGET_BYTES} bytes;"
                        " send fewer destinations per request or a shorter text",
                    )
                ]
            )
        draft = OutboundDraft(
            channel_id=channel.channel_id,
            destination=address,
            type=str(content.get("type", "text")),
            text=text,
            content=content,
            conversation_id=conversation_for(tenant_id, channel.channel_id, address),
            correlation_id=group.correlation_id,
            priority=send.priority or DEFAULT_PRIORITY,
            due_at=due_at,
            expire_at=expire_at,
            notify_url=send.notify_url,
            callback_data=send.callback_data,
            requested_receipts=receipts,
            message_id=derived_message_id(tenant_id, idempotency_key, gi, index)
            if idempotency_key
            else "",
            request_id=request_id,
            batch_id=batch,
            consent_type=consent_type,
            consent_category=consent_category or "",
        )
        planned.append(PlannedDestination(group.correlation_id, address, draft))
    return planned


def _builtins(kind: str, from_address: str, address: str) -> dict[str, str]:
    """Variables the platform supplies; request values override them."""
    values = {"destination": address}
    if kind == "email":
        # RFC 2369 style: works with no web endpoint of ours.
        values["unsubscribe"] = f"mailto:{from_address}?subject=unsubscribe"
    return values


def _check_channel(
    kind: str, send: BatchSend, channels: Mapping[str, Channel], problems: list[FieldViolation]
) -> Channel | None:
    if kind not in _ADDRESS_FIELD:
        problems.append(FieldViolation("channel", "must be one of sms, email, rcs, whatsapp"))
        return None
    if not send.from_address:
        problems.append(FieldViolation("from", "required"))
    channel = pick_channel(kind, send.from_address, channels)
    if channel is None:
        problems.append(FieldViolation("channel", f"no {kind} channel is configured"))
    return channel


def _check_destinations(
    kind: str, groups: tuple[BatchGroup, ...], problems: list[FieldViolation]
) -> list[tuple[int, int, BatchGroup, str]]:
    field_name = _ADDRESS_FIELD.get(kind)
    total = sum(len(g.msisdn) + len(g.email) for g in groups)
    if total == 0:
        problems.append(FieldViolation("to", "at least one destination address is required"))
        return []
    if total > MAX_DESTINATIONS:
        problems.append(
            FieldViolation("to", f"at most {MAX_DESTINATIONS} destination addresses, got {total}")
        )
        return []
    if field_name is None:
        return []
    found: list[tuple[int, int, BatchGroup, str]] = []
    index = 0
    for gi, group in enumerate(groups):
        wrong, right = (
            (group.email, group.msisdn) if field_name == "msisdn" else (group.msisdn, group.email)
        )
        if wrong:
            other = "email" if field_name == "msisdn" else "msisdn"
            problems.append(
                FieldViolation(f"to[{gi}].{other}", f"not used on {kind}; use {field_name}")
            )
        if not right and not wrong:
            problems.append(FieldViolation(f"to[{gi}].{field_name}", "required"))
        for ai, raw in enumerate(right):
            try:
                address = normalize_msisdn(raw) if field_name == "msisdn" else normalize_email(raw)
            except AddressError as exc:
                problems.append(FieldViolation(f"to[{gi}].{field_name}[{ai}]", str(exc)))
                continue
            found.append((gi, index, group, address))
            index += 1
    return found


def _check_body(
    kind: str, send: BatchSend, template: Template | None, problems: list[FieldViolation]
) -> None:
    if send.content is not None and send.template is not None:
        problems.append(FieldViolation("template", "content and template are mutually exclusive"))
        return
    if not send.content and not send.template:
        # An empty object names nothing to send, just like an absent one.
        where = "template.id" if send.template is not None else "content"
        problems.append(FieldViolation(where, "content or template is required"))
        return
    if send.template is not None:
        if not (send.template.get("id") or send.template.get("code")):
            problems.append(FieldViolation("template.id", "id or code is required"))
        elif template is None:
            problems.append(FieldViolation("template.id", "unknown template"))
        return
    if send.content and kind in _ADDRESS_FIELD:
        problems.extend(check_content(kind, send.content))


class _Overflow(ValueError):
    """A destination's rendered message is over its channel's cap; ``path`` names the field."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(why)
        self.path = path


def _has_placeholders(node: Any) -> bool:
    """Whether any string in a JSON-like tree may name a variable."""
    if isinstance(node, str):
        return "$(" in node
    if isinstance(node, Mapping):
        return any(_has_placeholders(v) for v in node.values())
    if isinstance(node, list | tuple):
        return any(_has_placeholders(v) for v in node)
    return False


def _size(node: Any) -> int:
    """UTF-8 bytes of every string in a rendered tree."""
    if isinstance(node, str):
        return len(node) if node.isascii() else len(node.encode())
    if isinstance(node, Mapping):
        return sum(_size(v) for v in node.values())
    if isinstance(node, list):
        return sum(_size(v) for v in node)
    return 0


def _render(
    kind: str,
    send: BatchSend,
    template: Template | None,
    values: Mapping[str, str],
    smart: bool = False,
) -> tuple[dict[str, Any], str]:
    """``smart`` applies smart encoding, before the caps: they count what is sent."""
    limit = body_limit(kind)
    if template is not None:
        # Templates, and only templates, may leave a variable blank.
        try:
            body = render_text(template.body, values, blank_missing=True, limit=limit)
        except TooLong:
            raise _Overflow("template", past_body_limit(kind)) from None
        body = smart_encode(body) if smart else body
        problem = body_problem(kind, {"text": body})
        if problem:
            raise _Overflow("template", problem)
        content = {
            "type": "template",
            "text": body,
            "template": {"id": template.id, "code": template.code, "lang": template.lang},
        }
        return content, body
    assert send.content is not None
    keys = body_keys(kind)
    try:
        content = render_tree(
            dict(send.content),
            values,
            limit=limit * len(keys) + RENDERED_EXTRA_MAX,
            key_limits=dict.fromkeys(keys, limit),
        )
    except TooLong as exc:
        if exc.key:
            raise _Overflow(f"content.{exc.key}", past_body_limit(kind)) from None
        raise _Overflow("content", str(exc)) from None
    if smart and isinstance(content.get("text"), str):
        content["text"] = smart_encode(content["text"])
    problem = body_problem(kind, {k: str(content.get(k) or "") for k in keys})
    if problem:
        raise _Overflow("content.html" if content.get("html") else "content.text", problem)
    text = str(content.get("text") or content.get("subject") or "")
    return content, text
