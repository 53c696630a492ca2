"""The consent ledger in the send and inbound paths.

Sends: a destination the ledger stops is stored FAILED with OPTED_OUT and
never dispatched; email gets a signed one-click unsubscribe link. Inbound:
a customer message that is a keyword changes the ledger in the commit that
stores it, and the first change is confirmed with a reply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import quote

from server.channels import ChannelRegistry
from server.domain.consent import (
    CONSENT_REPLY,
    KEYWORD_CHANNELS,
    PROVIDER_OPT_OUT_REASON,
    SCOPE_ALL,
    Applied,
    ConsentChange,
    ConsentSettings,
    ConsentSource,
    ConsentState,
    InboundKeyword,
    KeywordAction,
    KeywordOutcome,
    blocks,
    classify,
    normalise_scope,
)
from server.domain.inbound import InboundBatch
from server.domain.models import OutboundDraft, OutboundMessage, conversation_for
from server.domain.unsubscribe import UnsubscribeClaim, key_from, sign, unverified, verify
from server.storage.accept import AcceptResult, IdempotencyKey
from server.storage.inbound import ReceiveOutcome

UNSUBSCRIBE_PATH = "/unsubscribe/"


class ConsentLedger(Protocol):
    async def consent_states(
        self, tenant_id: str, channel_type: str, addresses: Sequence[str]
    ) -> dict[str, dict[str, ConsentState]]: ...

    async def record_consent(
        self, tenant_id: str, change: ConsentChange, channel_ids: Sequence[str] = ()
    ) -> Applied: ...

    async def consent_settings(self, tenant_id: str) -> ConsentSettings: ...


class Inbox(Protocol):
    """Stores inbound traffic; keywords marked on it change the ledger in the same commit."""

    async def receive_inbound(self, tenant_id: str, batch: InboundBatch) -> ReceiveOutcome: ...


class ReplyOutbox(Protocol):
    async def accept(
        self,
        tenant_id: str,
        drafts: Sequence[OutboundDraft],
        idem: IdempotencyKey | None,
        render: Callable[[Sequence[OutboundMessage]], bytes],
        traceparent: str = "",
    ) -> AcceptResult: ...


class SigningSecrets(Protocol):
    """The tenant's webhook secret, which also keys its unsubscribe links."""

    async def webhook_secret(self, tenant_id: str) -> str: ...


class ConsentRules:
    def __init__(
        self,
        channels: ChannelRegistry,
        on_accept: Callable[[], None],
        *,
        ledger: ConsentLedger,
        inbox: Inbox,
        replies: ReplyOutbox,
        secrets: SigningSecrets,
        public_url: Callable[[], str] = lambda: "",
    ) -> None:
        self._ledger = ledger
        self._inbox = inbox
        self._replies = replies
        self._secrets = secrets
        self._channels = channels
        self._on_accept = on_accept
        self._public_url = public_url
        self._keys: dict[str, bytes] = {}

    # -- sends ---------------------------------------------------------------
    async def screen(
        self, tenant: str, drafts: Sequence[OutboundDraft], category: str
    ) -> list[OutboundDraft]:
        """The drafts marked for the ledger check their accept runs, with the
        category and, for email, the one-click unsubscribe link."""
        visible = self._channels.visible_to(tenant)
        screened = []
        scope = normalise_scope(category) if category else ""
        for d in drafts:
            channel = visible.get(d.channel_id)
            # At most one copy of each draft, and none for a draft planned
            # with this mark already: a batch has thousands.
            changes: dict[str, Any] = {}
            added: dict[str, str] = {}
            if channel is not None:
                kind = channel.contact_type.upper()
                if d.consent_type != kind or d.consent_category != category:
                    changes.update(consent_type=kind, consent_category=category)
                if kind == "EMAIL":
                    url = await self._unsubscribe_url(tenant, d.destination, category)
                    if url:
                        added["listUnsubscribe"] = url
            if scope:
                added["category"] = scope
            if added:
                changes["content"] = {**d.content, **added}
            screened.append(replace(d, **changes) if changes else d)
        return screened

    async def consent_of(
        self, tenant_id: str, channel_type: str, addresses: Sequence[str], category: str = ""
    ) -> Mapping[str, str]:
        """For a dry run: OPTED_OUT where the ledger would stop a send of category,
        OPTED_IN where it has entries that would not; addresses without entries left out."""
        states = await self._ledger.consent_states(tenant_id, channel_type.upper(), addresses)
        return {
            address: (
                ConsentState.OPTED_OUT.value
                if blocks(scopes, category)
                else ConsentState.OPTED_IN.value
            )
            for address, scopes in states.items()
            if scopes
        }

    async def _unsubscribe_url(self, tenant: str, address: str, category: str) -> str:
        """The one-click link an email carries; "" without a public URL to put in it."""
        base = self._public_url().rstrip("/")
        if not base:
            return ""
        # A category's link leaves the address's other mail alone.
        claim = UnsubscribeClaim(tenant, address, normalise_scope(category))
        token = sign(await self._key(tenant), claim)
        return f"{base}{UNSUBSCRIBE_PATH}{quote(token, safe='.')}"

    async def _key(self, tenant: str) -> bytes:
        if tenant not in self._keys:
            self._keys[tenant] = key_from(await self._secrets.webhook_secret(tenant))
        return self._keys[tenant]

    # -- the ledger --------------------------------------------------------------
    async def record(self, tenant: str, change: ConsentChange) -> Applied:
        """Record a change; an opt-out also withdraws what still waits to go."""
        channel_ids = self._channels_of(tenant, change.channel_type)
        return await self._ledger.record_consent(tenant, change, channel_ids)

    def _channels_of(self, tenant: str, kind: str) -> tuple[str, ...]:
        visible = self._channels.visible_to(tenant).items()
        return tuple(cid for cid, c in visible if c.contact_type.upper() == kind.upper())

    # -- one-click unsubscribe -------------------------------------------------
    async def one_click(self, token: str) -> Applied | None:
        """Record the opt-out a signed link asks for; None when the token is not ours."""
        claim = unverified(token)
        if claim is None:
            return None
        if verify(await self._key(claim.tenant_id), token) is None:
            return None
        change = ConsentChange(
            "EMAIL",
            claim.address,
            claim.scope or SCOPE_ALL,
            ConsentState.OPTED_OUT,
            ConsentSource.EMAIL_ONE_CLICK,
            reason="List-Unsubscribe=One-Click",
            message_id=claim.message_id,
        )
        return await self.record(claim.tenant_id, change)

    # -- provider refusals -----------------------------------------------------
    async def provider_opt_out(
        self, tenant: str, channel_id: str, address: str, message_id: str, code: str
    ) -> None:
        channel = self._channels.channel(channel_id)
        if channel is None:
            return
        change = ConsentChange(
            channel.contact_type.upper(),
            address,
            SCOPE_ALL,
            ConsentState.OPTED_OUT,
            ConsentSource.PROVIDER_ERROR,
            reason=f"{code}: {PROVIDER_OPT_OUT_REASON}" if code else PROVIDER_OPT_OUT_REASON,
            message_id=message_id,
        )
        await self.record(tenant, change)

    # -- inbound ---------------------------------------------------------------
    async def receive(
        self, tenant: str, batch: InboundBatch, kinds: Mapping[str, str]
    ) -> ReceiveOutcome:
        """Store a batch of inbound traffic, keywords acted on."""
        settings: ConsentSettings | None = None
        messages = []
        for m in batch.messages:
            kind = kinds.get(m.channel_id, "").upper()
            if kind in KEYWORD_CHANNELS and m.type == "text" and m.text:
                if settings is None:
                    settings = await self._ledger.consent_settings(tenant)
                word = classify(m.text, settings)
                if word is not None:
                    channel_ids = self._channels_of(tenant, kind)
                    m = replace(m, keyword=InboundKeyword(kind, word, channel_ids))
            messages.append(m)
        marked = replace(batch, messages=tuple(messages))
        outcome = await self._inbox.receive_inbound(tenant, marked)
        if settings is not None and outcome.keywords:
            await self._confirm(tenant, outcome.keywords, settings.in_force())
        return outcome

    async def _confirm(
        self, tenant: str, keywords: Sequence[KeywordOutcome], settings: ConsentSettings
    ) -> None:
        """One reply per change of state: a repeated STOP is not answered again."""
        if settings.replies_disabled:
            return
        drafts = []
        for k in keywords:
            if not k.changed or k.action is KeywordAction.HELP:
                continue
            opted_out = k.action is KeywordAction.OPT_OUT
            text = settings.opt_out_reply if opted_out else settings.opt_in_reply
            drafts.append(
                OutboundDraft(
                    channel_id=k.channel_id,
                    destination=k.address,
                    type="text",
                    text=text,
                    content={"type": "text", "text": text, CONSENT_REPLY: True},
                    conversation_id=conversation_for(tenant, k.channel_id, k.address),
                )
            )
        if drafts:
            await self._replies.accept(tenant, drafts, None, lambda _created: b"")
            self._on_accept()
