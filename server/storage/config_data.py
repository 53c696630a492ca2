"""Global variables and the channels created over the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.customer import GlobalVar
from server.domain.errors import already_exists, not_found
from server.domain.models import Channel
from server.storage.sql import insert_for
from server.storage.tenant_schema import channels, global_vars
from server.storage.tx import Tx

# -- global variables ----------------------------------------------------------------


async def list_vars(conn: AsyncConnection, tenant_id: str, channel_id: str = "") -> list[GlobalVar]:
    """Tenant-wide values, plus the given channel's (every channel's when none is given)."""
    query = select(global_vars).where(global_vars.c.tenant_id == tenant_id)
    if channel_id:
        query = query.where(global_vars.c.channel_id.in_(("", channel_id)))
    rows = (await conn.execute(query.order_by(global_vars.c.key, global_vars.c.channel_id))).all()
    return [
        GlobalVar(r.key, r.value, r.description or "", r.channel_id, r.updated_at) for r in rows
    ]


async def set_var(tx: Tx, tenant_id: str, var: GlobalVar) -> GlobalVar:
    values = {"value": var.value, "description": var.description, "updated_at": tx.now}
    stmt = insert_for(tx.conn, global_vars).values(
        tenant_id=tenant_id, channel_id=var.channel_id, key=var.key, **values
    )
    await tx.conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[global_vars.c.tenant_id, global_vars.c.channel_id, global_vars.c.key],
            set_=values,
        )
    )
    return GlobalVar(var.key, var.value, var.description, var.channel_id, tx.now)


async def delete_var(tx: Tx, tenant_id: str, key: str, channel_id: str) -> None:
    gone = await tx.conn.execute(
        delete(global_vars).where(
            global_vars.c.tenant_id == tenant_id,
            global_vars.c.channel_id == channel_id,
            global_vars.c.key == key,
        )
    )
    if not gone.rowcount:
        raise not_found("global_var", f"{channel_id}:{key}" if channel_id else key)


# -- channels ------------------------------------------------------------------------


def _config(c: Channel) -> dict[str, Any]:
    return {
        "contact_type": c.contact_type,
        "provider": c.provider,
        "lane": c.lane,
        "name": c.name,
        "sandbox": c.sandbox,
        "tps": c.tps,
        "max_in_flight": c.max_in_flight,
        "settings": dict(c.settings),
    }


def _channel(channel_id: str, config: dict[str, Any]) -> Channel:
    return Channel(
        channel_id=channel_id,
        contact_type=str(config.get("contact_type", "")),
        provider=str(config.get("provider", "sandbox")),
        lane=str(config.get("lane", "")),
        name=str(config.get("name", "")),
        sandbox=bool(config.get("sandbox", False)),
        tps=int(config.get("tps", 0)),
        max_in_flight=int(config.get("max_in_flight", 64)),
        settings=dict(config.get("settings") or {}),
    )


async def all_channels(conn: AsyncConnection) -> list[tuple[str, Channel]]:
    """Every stored channel with its owning tenant, for loading at start."""
    rows = (await conn.execute(select(channels).order_by(channels.c.created_at))).all()
    return [(r.tenant_id, _channel(r.channel_id, dict(r.config))) for r in rows]


async def channels_fingerprint(conn: AsyncConnection) -> tuple[int, int, int]:
    """A cheap summary of the channels table that changes with every insert,
    update and delete, so replicas can poll it instead of re-reading every row."""
    row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.max(channels.c.updated_at), 0),
                func.coalesce(func.sum(channels.c.updated_at), 0),
            ).select_from(channels)
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def insert_channel(tx: Tx, tenant_id: str, c: Channel) -> Channel:
    inserted = await tx.conn.execute(
        insert_for(tx.conn, channels)
        .values(
            tenant_id=tenant_id,
            channel_id=c.channel_id,
            config=_config(c),
            created_at=tx.now,
            updated_at=tx.now,
        )
        .on_conflict_do_nothing()
        .returning(channels.c.channel_id)
    )
    if inserted.first() is None:
        raise already_exists("CHANNEL_EXISTS", f"channel {c.channel_id!r} already exists")
    return c


async def replace_channel(tx: Tx, tenant_id: str, c: Channel) -> Channel:
    changed = await tx.conn.execute(
        update(channels)
        .where(channels.c.tenant_id == tenant_id, channels.c.channel_id == c.channel_id)
        .values(config=_config(c), updated_at=tx.now)
    )
    if not changed.rowcount:
        raise not_found("channel", c.channel_id)
    return c


async def delete_channel(tx: Tx, tenant_id: str, channel_id: str) -> None:
    gone = await tx.conn.execute(
        delete(channels).where(
            channels.c.tenant_id == tenant_id, channels.c.channel_id == channel_id
        )
    )
    if not gone.rowcount:
        raise not_found("channel", channel_id)
