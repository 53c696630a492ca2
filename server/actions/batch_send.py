"""SendBatch as a use case: plan every destination, then store what can be sent.

ValidateBatch runs the same planning (plan_batch_send), so a dry run and a
send refuse the same body with the same errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from server.domain.addresses import AddressError, normalize_email, normalize_msisdn
from server.domain.batch import (
    BatchSend,
    PlannedDestination,
    Template,
    batch_id,
    pick_channel,
    plan_batch,
)
from server.domain.customer import GlobalVar, var_values
from server.domain.errors import FieldViolation, invalid
from server.domain.fallback import plan_chain
from server.domain.models import Channel, OutboundDraft, OutboundMessage
from server.storage.accept import AcceptResult, IdempotencyKey


class Templates(Protocol):
    """The tenant's stored templates and global variables."""

    async def find_template(
        self, tenant_id: str, *, template_id: str = "", code: str = "", lang: str = ""
    ) -> Template | None: ...

    async def list_global_vars(self, tenant_id: str, channel_id: str = "") -> list[GlobalVar]: ...


class ContactLanguages(Protocol):
    async def contact_langs(self, tenant_id: str, contact_ids: Sequence[str]) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class BatchSources:
    """What planning reads: templates, global variables, contacts' languages."""

    templates: Templates
    languages: ContactLanguages


class Acceptor(Protocol):
    async def accept(
        self,
        tenant_id: str,
        drafts: Sequence[Any],
        idem: IdempotencyKey | None,
        render: Callable[[Sequence[OutboundMessage]], bytes],
        traceparent: str = "",
    ) -> AcceptResult: ...


UrlCheck = Callable[[str], str | None]
# Marks the drafts the hub must not send (their refusal set); the rest unchanged.
Screen = Callable[[list[OutboundDraft]], Awaitable[list[OutboundDraft]]]


async def plan_batch_send(
    sources: BatchSources,
    channels: Mapping[str, Channel],
    tenant_id: str,
    send: BatchSend,
    now: int,
    *,
    url_check: UrlCheck | None = None,
    idempotency_key: str = "",
    request_id: str = "",
    batch: str = "",
    consent_category: str | None = None,
) -> list[PlannedDestination]:
    """Every destination's draft or refusal; a refusal of the whole body raises DomainError.

    ``consent_category``, when a consent screen will run, is stamped as the
    drafts are made, so the screen need not copy each one to mark it."""
    template = await _template(sources.templates, tenant_id, send)
    refusal = url_check(send.notify_url) if send.notify_url and url_check else None
    if refusal:
        raise invalid([FieldViolation("notifyUrl", refusal)])
    channel = pick_channel(send.channel.lower(), send.from_address, channels)
    channel_id = channel.channel_id if channel is not None else ""
    stored_vars = await sources.templates.list_global_vars(tenant_id, channel_id)
    by_destination = await _contact_templates(sources, tenant_id, send, channel_id)
    # A chain that cannot work refuses the whole body, before any address is looked at.
    legs = plan_chain(channel, send.fallback, channels) if channel is not None else ()
    planned = plan_batch(
        tenant_id,
        send,
        channels,
        now,
        template=template,
        tenant_vars=var_values(stored_vars, channel_id),
        by_destination=by_destination,
        idempotency_key=idempotency_key,
        request_id=request_id,
        batch=batch,
        consent_category=consent_category,
    )
    if not legs:
        return planned
    return [
        replace(p, draft=replace(p.draft, fallback=legs)) if p.draft is not None else p
        for p in planned
    ]


async def send_batch(
    store: Acceptor,
    sources: BatchSources,
    channels: Mapping[str, Channel],
    tenant_id: str,
    send: BatchSend,
    now: int,
    *,
    idem: IdempotencyKey | None,
    render: Callable[[Sequence[PlannedDestination], Sequence[OutboundMessage]], bytes],
    url_check: UrlCheck | None = None,
    request_id: str = "",
    traceparent: str = "",
    screen: Screen | None = None,
) -> tuple[list[PlannedDestination], AcceptResult]:
    """Plan, then store the drafts; ``render`` makes the reply a retry with ``idem`` gets."""
    key = idem.key if idem else ""
    planned = await plan_batch_send(
        sources,
        channels,
        tenant_id,
        send,
        now,
        url_check=url_check,
        idempotency_key=key,
        request_id=request_id,
        batch=batch_id(tenant_id, key),
        consent_category=send.category if screen is not None else None,
    )
    drafts = [p.draft for p in planned if p.draft is not None]
    if screen is not None:
        # e.g. the consent ledger: a stopped destination is stored refused, never sent.
        drafts = await screen(drafts)

    def reply(created: Sequence[OutboundMessage]) -> bytes:
        return render(planned, created)

    return planned, await store.accept(tenant_id, drafts, idem, reply, traceparent)


async def _template(store: Templates, tenant_id: str, send: BatchSend) -> Template | None:
    ref = send.template
    if ref is None:
        return None
    return await store.find_template(
        tenant_id,
        template_id=str(ref.get("id", "")),
        code=str(ref.get("code", "")),
        lang=str(ref.get("lang", "")),
    )


async def _contact_templates(
    sources: BatchSources, tenant_id: str, send: BatchSend, channel_id: str
) -> dict[str, Template]:
    """For a template named by code alone: per address, the version in the
    contact's preferred language, where one is approved on the channel."""
    ref = send.template
    if ref is None or ref.get("id") or ref.get("lang") or not ref.get("code"):
        return {}
    code = str(ref["code"])
    normalize = normalize_email if send.channel.lower() == "email" else normalize_msisdn
    addresses = set()
    for group in send.groups:
        for raw in (*group.msisdn, *group.email):
            try:
                addresses.add(normalize(raw))
            except AddressError:
                continue  # plan_batch reports it against its field
    langs = await sources.languages.contact_langs(tenant_id, sorted(addresses))
    versions: dict[str, Template] = {}
    for lang in set(langs.values()):
        found = await sources.templates.find_template(tenant_id, code=code, lang=lang)
        if found is not None and found.approvals.get(channel_id) == "APPROVED":
            versions[lang] = found
    return {address: versions[lang] for address, lang in langs.items() if lang in versions}
