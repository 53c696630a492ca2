"""The consent ledger: entries, their append-only history, and tenant settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.consent import (
    CONSENT_REPLY,
    OPTED_OUT_REFUSAL,
    Applied,
    ConsentChange,
    ConsentEntry,
    ConsentSettings,
    ConsentSource,
    ConsentState,
    ConsentStep,
    blocks,
)
from server.domain.errors import not_found
from server.domain.models import OutboundDraft, Page, new_id
from server.domain.paging import PageRequest
from server.domain.status import DeliveryStatus
from server.storage import direct
from server.storage import messages as msgs
from server.storage.consent_schema import consent_history, consent_settings, consents
from server.storage.keyset import Order, keyset_page
from server.storage.message_schema import messages
from server.storage.sql import insert_for
from server.storage.tx import LATER_MESSAGES, Tx
from server.storage.writer import GROUP_HINTS


def _key(tenant_id: str, channel_type: str, address: str, scope: str) -> Any:
    return and_(
        consents.c.tenant_id == tenant_id,
        consents.c.channel_type == channel_type,
        consents.c.address == address,
        consents.c.scope == scope,
    )


async def apply(
    tx: Tx, tenant_id: str, change: ConsentChange, channel_ids: Sequence[str] = ()
) -> Applied:
    """Record one statement: the history always, the entry's state when it moves.

    An opt-out also withdraws what is still waiting to go to the address on
    `channel_ids` (the tenant's channels of that type): a send accepted for
    later must not leave after the customer said STOP.
    """
    values = {
        "state": change.state.value,
        "source": change.source.value,
        "reason": change.reason,
        "inbound_message_id": change.inbound_message_id,
        "message_id": change.message_id,
    }
    await tx.conn.execute(
        consent_history.insert().values(
            tenant_id=tenant_id,
            channel_type=change.channel_type,
            address=change.address,
            scope=change.scope,
            ts=tx.now,
            **values,
        )
    )
    # Sends later in this group must see this statement.
    tx.conn.info.pop(_READ, None)
    where = _key(tenant_id, change.channel_type, change.address, change.scope)
    inserted = await tx.conn.execute(
        insert_for(tx.conn, consents)
        .values(
            tenant_id=tenant_id,
            channel_type=change.channel_type,
            address=change.address,
            scope=change.scope,
            id=new_id(),
            created_at=tx.now,
            updated_at=tx.now,
            **values,
        )
        .on_conflict_do_nothing()
        .returning(consents.c.id)
    )
    changed = inserted.first() is not None
    if not changed:
        # Only a move of state replaces the entry: a repeated STOP keeps the
        # first one's source and message, which is what caused the opt-out.
        moved = await tx.conn.execute(
            update(consents)
            .where(where, consents.c.state != change.state.value)
            .values(updated_at=tx.now, **values)
            .returning(consents.c.id)
        )
        changed = moved.first() is not None
    row = (await tx.conn.execute(select(consents).where(where))).one()
    withdrawn: tuple[str, ...] = ()
    if change.state is ConsentState.OPTED_OUT:
        withdrawn = await _withdraw_pending(tx, tenant_id, channel_ids, change)
    return Applied(_entry(row), changed, withdrawn)


async def _withdraw_pending(
    tx: Tx, tenant_id: str, channel_ids: Sequence[str], change: ConsentChange
) -> tuple[str, ...]:
    if not channel_ids:
        return ()
    await tx.flush(upto=LATER_MESSAGES)  # sends accepted earlier in this group
    # Locked, so a dispatcher claiming one of them waits and then finds it settled.
    rows = (
        await tx.conn.execute(
            select(messages.c.id, messages.c.content)
            .where(
                messages.c.tenant_id == tenant_id,
                messages.c.destination == change.address,
                messages.c.channel_id.in_(sorted(set(channel_ids))),
                messages.c.dispatch_state == msgs.PENDING,
            )
            .with_for_update()
        )
    ).all()
    opted_out = {change.scope: ConsentState.OPTED_OUT}
    withdrawn = []
    for r in rows:
        if (r.content or {}).get(CONSENT_REPLY):
            continue  # the confirmation of an earlier keyword still goes out
        category = str((r.content or {}).get("category", ""))
        if blocks(opted_out, category) and await msgs.set_status(
            tx, r.id, DeliveryStatus.FAILED, reason=OPTED_OUT_REFUSAL
        ):
            withdrawn.append(r.id)
    return tuple(withdrawn)


def _wanted(drafts: Sequence[OutboundDraft]) -> dict[str, list[str]]:
    """channel type -> the addresses whose ledger entries screening reads."""
    by_type: dict[str, list[str]] = {}
    for d in drafts:
        if d.consent_type and not d.refusal:
            by_type.setdefault(d.consent_type, []).append(d.destination)
    return by_type


def screen_hint(tenant_id: str, drafts: Sequence[OutboundDraft]) -> Any:
    """What screen(drafts) will read, as a writer hint (see writer.GROUP_HINTS)."""
    by_type = _wanted(drafts)
    return (_HINT, tenant_id, by_type) if by_type else None


async def screen(
    tx: Tx, tenant_id: str, drafts: Sequence[OutboundDraft]
) -> Sequence[OutboundDraft]:
    """The drafts, those whose destination the ledger stops marked OPTED_OUT.

    Run in the transaction that stores them: the read joins the group commit's
    connection (no connection of its own per send) and sees every opt-out
    committed before the send is. The first send of a group reads the entries
    of every send the group holds (their hints) in one go, and an opt-out
    written in the group drops what was read (see apply).
    """
    by_type = _wanted(drafts)
    if not by_type:
        return drafts
    found = {
        kind: await _group_states(tx, tenant_id, kind, wanted) for kind, wanted in by_type.items()
    }
    return [
        replace(d, refusal=OPTED_OUT_REFUSAL)
        if d.consent_type
        and not d.refusal
        and blocks(found[d.consent_type].get(d.destination, {}), d.consent_category)
        else d
        for d in drafts
    ]


_HINT = "consents"
# conn.info key: (batch id, {(tenant, channel type): (addresses read, what
# they hold)}), the ledger as this group's writes have read it.
_READ = "consent_states"
_Read = tuple[set[str], dict[str, dict[str, ConsentState]]]


async def _group_states(
    tx: Tx, tenant_id: str, channel_type: str, addresses: Sequence[str]
) -> dict[str, dict[str, ConsentState]]:
    """states() for addresses, read once a group for all the group's sends."""
    if not tx.batch:  # not a writer's group: nothing to share
        return await states(tx.conn, tenant_id, channel_type, addresses)
    info = tx.conn.info
    cache = info.get(_READ)
    if cache is None or cache[0] != tx.batch:
        cache = info[_READ] = (tx.batch, {})
    known: dict[tuple[str, str], _Read] = cache[1]
    read, found = known.setdefault((tenant_id, channel_type), (set(), {}))
    missing = set(addresses) - read
    if missing:
        hints = info.get(GROUP_HINTS)
        if hints is not None and hints[0] == tx.batch:
            for hint in hints[1]:
                if hint[0] == _HINT and hint[1] == tenant_id:
                    missing.update(hint[2].get(channel_type, ()))
            missing -= read
        found.update(await states(tx.conn, tenant_id, channel_type, sorted(missing)))
        read |= missing
    return {a: found[a] for a in addresses if a in found}


# Every send reads the ledger: compiled once (see direct.py).
_STATES = direct.Statement(
    select(consents.c.address, consents.c.scope, consents.c.state).where(
        consents.c.tenant_id == bindparam("tenant_id"),
        consents.c.channel_type == bindparam("channel_type"),
        consents.c.address.in_(bindparam("addresses", expanding=True)),
    )
)


async def states(
    conn: AsyncConnection, tenant_id: str, channel_type: str, addresses: Sequence[str]
) -> dict[str, dict[str, ConsentState]]:
    """address -> scope -> state, for the addresses that have entries."""
    found: dict[str, dict[str, ConsentState]] = {}
    wanted = sorted(set(addresses))
    for start in range(0, len(wanted), 500):
        rows = await _STATES.rows(
            conn,
            {
                "tenant_id": tenant_id,
                "channel_type": channel_type,
                "addresses": wanted[start : start + 500],
            },
        )
        for r in rows:
            found.setdefault(r.address, {})[r.scope] = ConsentState(r.state)
    return found


async def list_page(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    page: PageRequest,
    state: ConsentState | None = None,
    channel_type: str = "",
    source: ConsentSource | None = None,
) -> Page[ConsentEntry]:
    query = select(consents).where(consents.c.tenant_id == tenant_id)
    if state is not None:
        query = query.where(consents.c.state == state.value)
    if channel_type:
        query = query.where(consents.c.channel_type == channel_type)
    if source is not None:
        query = query.where(consents.c.source == source.value)
    return await keyset_page(conn, query, OLDEST_FIRST, page, _entry)


OLDEST_FIRST = Order((consents.c.created_at, consents.c.id))


async def get(
    conn: AsyncConnection, tenant_id: str, channel_type: str, address: str
) -> tuple[list[ConsentEntry], list[ConsentStep]]:
    rows = (
        await conn.execute(
            select(consents)
            .where(
                consents.c.tenant_id == tenant_id,
                consents.c.channel_type == channel_type,
                consents.c.address == address,
            )
            .order_by(consents.c.scope)
        )
    ).all()
    if not rows:
        raise not_found("consent", f"{channel_type}/{address}")
    steps = (
        await conn.execute(
            select(consent_history)
            .where(
                consent_history.c.tenant_id == tenant_id,
                consent_history.c.channel_type == channel_type,
                consent_history.c.address == address,
            )
            .order_by(consent_history.c.id)
        )
    ).all()
    return [_entry(r) for r in rows], [
        ConsentStep(
            scope=s.scope,
            state=ConsentState(s.state),
            source=ConsentSource(s.source),
            reason=s.reason,
            inbound_message_id=s.inbound_message_id,
            message_id=s.message_id,
            timestamp=s.ts,
        )
        for s in steps
    ]


def _entry(r: Any) -> ConsentEntry:
    return ConsentEntry(
        id=r.id,
        channel_type=r.channel_type,
        address=r.address,
        scope=r.scope,
        state=ConsentState(r.state),
        source=ConsentSource(r.source),
        reason=r.reason,
        inbound_message_id=r.inbound_message_id,
        message_id=r.message_id,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


async def settings(conn: AsyncConnection, tenant_id: str) -> ConsentSettings:
    query = select(consent_settings).where(consent_settings.c.tenant_id == tenant_id)
    row = (await conn.execute(query)).first()
    if row is None:
        return ConsentSettings()
    return ConsentSettings(
        opt_out_keywords=tuple(row.opt_out_keywords),
        opt_in_keywords=tuple(row.opt_in_keywords),
        help_keywords=tuple(row.help_keywords),
        opt_out_reply=row.opt_out_reply,
        opt_in_reply=row.opt_in_reply,
        replies_disabled=bool(row.replies_disabled),
    )


async def put_settings(tx: Tx, tenant_id: str, s: ConsentSettings) -> None:
    values = {
        "opt_out_keywords": list(s.opt_out_keywords),
        "opt_in_keywords": list(s.opt_in_keywords),
        "help_keywords": list(s.help_keywords),
        "opt_out_reply": s.opt_out_reply,
        "opt_in_reply": s.opt_in_reply,
        "replies_disabled": int(s.replies_disabled),
        "updated_at": tx.now,
    }
    stmt = insert_for(tx.conn, consent_settings).values(tenant_id=tenant_id, **values)
    await tx.conn.execute(stmt.on_conflict_do_update(index_elements=["tenant_id"], set_=values))
