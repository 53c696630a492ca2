"""SendMessage as a use case: plan one send, fill it in, screen it, store it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from server.actions.batch_send import Acceptor, BatchSources
from server.domain.batch import Template
from server.domain.customer import require_approved, text_value, var_values
from server.domain.errors import FieldViolation, invalid
from server.domain.fallback import FallbackStep, plan_chain
from server.domain.models import Channel, OutboundDraft, OutboundMessage
from server.domain.sending import SingleSend, fill_template, fill_text, plan_single
from server.storage.accept import AcceptResult, IdempotencyKey

# Marks the drafts the consent ledger is to check, with their category.
Screen = Callable[[list[OutboundDraft]], Awaitable[list[OutboundDraft]]]


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """The stored template a send names: by id, or by code and language."""

    id: str = ""
    code: str = ""
    lang: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendOne:
    send: SingleSend
    template: TemplateRef | None = None
    fallback: Sequence[FallbackStep] = ()
    contact_id: str = ""
    request_id: str = ""


async def send_message(
    store: Acceptor,
    sources: BatchSources,
    channels: Mapping[str, Channel],
    tenant_id: str,
    one: SendOne,
    *,
    screen: Screen,
    idem: IdempotencyKey | None,
    render: Callable[[Sequence[OutboundMessage]], bytes],
    traceparent: str = "",
) -> tuple[OutboundDraft, AcceptResult]:
    """The stored draft and what accepting it gave; ``render`` makes the reply a
    retry with ``idem`` gets back."""
    draft = plan_single(tenant_id, one.send, channels)
    draft = await personalise(sources, channels, tenant_id, draft, one)
    legs = plan_chain(channels[draft.channel_id], one.fallback, channels)
    draft = replace(draft, request_id=one.request_id, fallback=legs)
    [draft] = await screen([draft])
    return draft, await store.accept(tenant_id, [draft], idem, render, traceparent)


async def personalise(
    sources: BatchSources,
    channels: Mapping[str, Channel],
    tenant_id: str,
    draft: OutboundDraft,
    one: SendOne,
) -> OutboundDraft:
    """Global variables into the text, and for templates the stored template,
    in the contact's language when the send names none."""
    if draft.type != "template" and "$(" not in draft.text:
        return draft  # nothing to fill: spare the hot path a read
    stored_vars = await sources.templates.list_global_vars(tenant_id, draft.channel_id)
    values = {"destination": draft.destination, **var_values(stored_vars, draft.channel_id)}
    kind = channels[draft.channel_id].contact_type
    if draft.type != "template":
        text = fill_text(draft, values, kind)
        if text == draft.text:
            return draft
        content = dict(draft.content)
        if "text" in content:
            content["text"] = text
        return replace(draft, text=text, content=content)
    ref = one.template or TemplateRef()
    template = await _stored_template(
        sources, tenant_id, ref, [one.contact_id, draft.destination], draft.channel_id
    )
    require_approved(template.code, template.approvals, draft.channel_id)
    values.update({k: text_value(v) for k, v in ref.data.items()})
    body = fill_template(template.body, values, kind)
    content = dict(draft.content)
    content["text"] = body
    content["template"] = {
        **dict(content.get("template", {})),
        "id": template.id,
        "code": template.code,
        "lang": template.lang,
    }
    return replace(draft, text=body, content=content)


async def _stored_template(
    sources: BatchSources,
    tenant_id: str,
    ref: TemplateRef,
    contact_ids: Sequence[str],
    channel_id: str,
) -> Template:
    """By id, or by code in the named language; by code alone, the version in
    the contact's language where one is approved on the channel (as a batch
    chooses per destination), else the code's version in any language."""
    templates = sources.templates
    if ref.id or ref.lang or not ref.code:
        template = await templates.find_template(
            tenant_id, template_id=ref.id, code=ref.code, lang=ref.lang
        )
    else:
        langs = await sources.languages.contact_langs(tenant_id, contact_ids)
        lang = next((langs[c] for c in contact_ids if c in langs), "")
        template = (
            await templates.find_template(tenant_id, code=ref.code, lang=lang) if lang else None
        )
        if template is None or template.approvals.get(channel_id) != "APPROVED":
            template = await templates.find_template(tenant_id, code=ref.code)
    if template is None:
        raise invalid([FieldViolation("template.id", "unknown template")])
    return template
