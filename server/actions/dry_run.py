"""ValidateBatch: what SendBatch would do with a body, per destination, storing nothing.

The body goes through the same planning as a send (plan_batch_send), so the
refusals are the send's own. When the send would refuse the whole body, the
addresses that are fine are planned once more without the bad ones, so each
still gets its text, encoding and route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from server.actions.batch_send import BatchSources, UrlCheck, plan_batch_send
from server.domain.addresses import AddressError, normalize_email, normalize_msisdn
from server.domain.batch import BatchSend, PlannedDestination, pick_channel
from server.domain.consent import OPTED_OUT_REFUSAL
from server.domain.content import parse_content
from server.domain.errors import DomainError
from server.domain.models import Channel
from server.domain.send_check import (
    CONSENT_UNKNOWN,
    BatchCheck,
    DestinationCheck,
    names_destination,
    sms_estimate,
    sms_fallback,
)

_FIELD = {"sms": "msisdn", "rcs": "msisdn", "whatsapp": "msisdn", "email": "email"}


class ConsentLookup(Protocol):
    """The consent ledger's answer for addresses on one channel type: address -> state.

    Addresses it has no entry for are left out.
    """

    async def consent_of(
        self, tenant_id: str, channel_type: str, addresses: Sequence[str], category: str = ""
    ) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class _Address:
    group: int
    path: str
    raw: str
    normalized: str | None


async def validate_batch(
    sources: BatchSources,
    channels: Mapping[str, Channel],
    tenant_id: str,
    send: BatchSend,
    now: int,
    *,
    consent: ConsentLookup,
    url_check: UrlCheck | None = None,
) -> BatchCheck:
    kind = send.channel.lower()
    addresses = _addresses(kind, send)
    refusal: DomainError | None = None
    try:
        planned = await plan_batch_send(
            sources, channels, tenant_id, send, now, url_check=url_check
        )
    except DomainError as err:
        refusal = err
        planned = await _plan_usable(sources, channels, tenant_id, send, now, url_check, addresses)
    smart = kind == "sms" and bool(send.options.get("smartEncoding"))
    rendered = planned
    if smart and planned:
        # The texts as rendered, before smart encoding, to say what it changes.
        plain = replace(send, options={**send.options, "smartEncoding": False})
        try:
            usable_plain = _usable(plain, addresses)
            rendered = await plan_batch_send(sources, channels, tenant_id, usable_plain, now)
        except DomainError:
            rendered = planned
    channel = pick_channel(kind, send.from_address, channels)
    found = await consent.consent_of(
        tenant_id,
        channel.contact_type if channel is not None else kind,
        sorted({a.normalized for a in addresses if a.normalized}),
        send.category,
    )
    usable = [a for a in addresses if a.normalized is not None]
    # One plan entry per usable address, in order, when there is a plan at all.
    at = {a.path: i for i, a in enumerate(usable)} if len(planned) == len(usable) else {}
    results = []
    for address in addresses:
        i = at.get(address.path)
        results.append(
            _check(
                address,
                send.groups[address.group].correlation_id,
                planned[i] if i is not None else None,
                rendered[i] if i is not None and i < len(rendered) else None,
                channel,
                refusal,
                found,
                smart,
            )
        )
    return BatchCheck(tuple(results), refusal)


def _check(
    address: _Address,
    correlation_id: str,
    planned: PlannedDestination | None,
    rendered: PlannedDestination | None,
    channel: Channel | None,
    refusal: DomainError | None,
    consent: Mapping[str, str],
    smart: bool,
) -> DestinationCheck:
    violations = refusal.violations if refusal is not None else ()
    errors = tuple(v for v in violations if names_destination(v, address.group, address.path))
    check = DestinationCheck(
        correlation_id=correlation_id,
        destination=address.normalized or address.raw,
        sendable=False,
        errors=errors,
        channel_id=channel.channel_id if channel is not None else "",
        consent=consent.get(address.normalized or "", CONSENT_UNKNOWN),
    )
    if planned is None:
        return check
    draft = planned.draft
    if draft is None or channel is None:
        return replace(check, error=planned.error)
    if check.consent == OPTED_OUT_REFUSAL:
        # The send would store it refused and never dispatch it.
        return replace(check, error=OPTED_OUT_REFUSAL, type=draft.type, text=draft.text)
    route: tuple[str, ...] = (draft.channel_id,)
    sms = None
    # Smart encoding is reported against the text as rendered, before it.
    original = rendered.draft if rendered is not None and rendered.draft is not None else draft
    if channel.contact_type.lower() == "sms":
        # What the adapter sends, and counts segments of: the content's text.
        sms = sms_estimate(parse_content(original.content).text or original.text, smart)
    elif (fallback := sms_fallback(channel, draft.content)) is not None:
        target, text = fallback
        route += (target,)
        sms = sms_estimate(text, False)
    return replace(
        check,
        sendable=refusal is None,
        route=route,
        type=draft.type,
        text=draft.text,
        sms=sms,
    )


def _addresses(kind: str, send: BatchSend) -> list[_Address]:
    """Every address of the body, in request order, with its JSON path."""
    wanted = _FIELD.get(kind)
    found = []
    for gi, group in enumerate(send.groups):
        for name, listed in (("msisdn", group.msisdn), ("email", group.email)):
            if wanted is not None and name != wanted:
                continue
            normalize = normalize_msisdn if name == "msisdn" else normalize_email
            for ai, raw in enumerate(listed):
                try:
                    normalized: str | None = normalize(raw)
                except AddressError:
                    normalized = None
                found.append(_Address(gi, f"to[{gi}].{name}[{ai}]", raw, normalized))
    return found


def _usable(send: BatchSend, addresses: list[_Address]) -> BatchSend:
    """The body with only the addresses a send could use, in the same order."""
    keep: dict[int, list[str]] = {}
    for a in addresses:
        if a.normalized is not None:
            keep.setdefault(a.group, []).append(a.raw)
    kind = send.channel.lower()
    groups = tuple(
        replace(g, msisdn=tuple(keep[gi]), email=())
        if _FIELD.get(kind) == "msisdn"
        else replace(g, msisdn=(), email=tuple(keep[gi]))
        for gi, g in enumerate(send.groups)
        if gi in keep
    )
    return replace(send, groups=groups)


async def _plan_usable(
    sources: BatchSources,
    channels: Mapping[str, Channel],
    tenant_id: str,
    send: BatchSend,
    now: int,
    url_check: UrlCheck | None,
    addresses: list[_Address],
) -> list[PlannedDestination]:
    """The plan of the usable addresses alone, or none when the body is refused for more."""
    if send.channel.lower() not in _FIELD:
        return []
    try:
        return await plan_batch_send(
            sources, channels, tenant_id, _usable(send, addresses), now, url_check=url_check
        )
    except DomainError:
        return []
