"""Message templates and their per-channel approval."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.batch import Template
from server.domain.customer import TemplateRecord
from server.domain.errors import already_exists, not_found
from server.domain.models import new_id
from server.storage.tenant_schema import templates
from server.storage.tx import Tx


async def create(
    tx: Tx,
    tenant_id: str,
    *,
    code: str,
    lang: str,
    body: str,
    approvals: Mapping[str, str],
    header: str = "",
    footer: str = "",
    category: str = "",
    buttons: list[Any] | None = None,
) -> Template:
    template_id = new_id()
    await tx.conn.execute(
        templates.insert().values(
            id=template_id,
            tenant_id=tenant_id,
            code=code,
            lang=lang,
            category=category,
            header=header,
            body=body,
            footer=footer,
            buttons=buttons or [],
            approvals=dict(approvals),
            created_at=tx.now,
            updated_at=tx.now,
        )
    )
    return Template(template_id, code, lang, body, header, footer, dict(approvals))


async def find(
    conn: AsyncConnection, tenant_id: str, *, template_id: str = "", code: str = "", lang: str = ""
) -> Template | None:
    query = select(templates).where(templates.c.tenant_id == tenant_id)
    if template_id:
        query = query.where(templates.c.id == template_id)
    elif code:
        query = query.where(templates.c.code == code)
        if lang:
            query = query.where(templates.c.lang == lang)
    else:
        return None
    row = (await conn.execute(query.order_by(templates.c.lang).limit(1))).first()
    if row is None:
        return None
    return Template(
        row.id, row.code, row.lang, row.body, row.header, row.footer, dict(row.approvals)
    )


# -- the API's view: full records, listing, replace and delete ----------------------


def _record(row: Any) -> TemplateRecord:
    return TemplateRecord(
        id=row.id,
        code=row.code,
        lang=row.lang,
        body=row.body,
        category=row.category or "",
        header=row.header or "",
        footer=row.footer or "",
        buttons=tuple(row.buttons or ()),
        approvals=dict(row.approvals or {}),
        created_at=row.created_at,
    )


async def _code_taken(conn: AsyncConnection, tenant_id: str, t: TemplateRecord) -> bool:
    found = (
        await conn.execute(
            select(templates.c.id).where(
                templates.c.tenant_id == tenant_id,
                templates.c.code == t.code,
                templates.c.lang == t.lang,
                templates.c.id != t.id,
            )
        )
    ).first()
    return found is not None


async def insert_record(tx: Tx, tenant_id: str, t: TemplateRecord) -> TemplateRecord:
    if await _code_taken(tx.conn, tenant_id, t):
        raise already_exists("TEMPLATE_EXISTS", f"template {t.code!r} in {t.lang} already exists")
    created = await create(
        tx,
        tenant_id,
        code=t.code,
        lang=t.lang,
        body=t.body,
        approvals=t.approvals,
        header=t.header,
        footer=t.footer,
        category=t.category,
        buttons=[dict(b) for b in t.buttons],
    )
    return replace(t, id=created.id, created_at=tx.now)


async def replace_record(tx: Tx, tenant_id: str, t: TemplateRecord) -> TemplateRecord:
    existing = await get_record(tx.conn, tenant_id, t.id)
    if await _code_taken(tx.conn, tenant_id, t):
        raise already_exists("TEMPLATE_EXISTS", f"template {t.code!r} in {t.lang} already exists")
    await tx.conn.execute(
        update(templates)
        .where(templates.c.tenant_id == tenant_id, templates.c.id == t.id)
        .values(
            code=t.code,
            lang=t.lang,
            category=t.category,
            header=t.header,
            body=t.body,
            footer=t.footer,
            buttons=[dict(b) for b in t.buttons],
            approvals=dict(t.approvals),
            updated_at=tx.now,
        )
    )
    return replace(t, created_at=existing.created_at)


async def delete_record(tx: Tx, tenant_id: str, template_id: str) -> None:
    gone = await tx.conn.execute(
        delete(templates).where(templates.c.tenant_id == tenant_id, templates.c.id == template_id)
    )
    if not gone.rowcount:
        raise not_found("template", template_id)


async def get_record(conn: AsyncConnection, tenant_id: str, template_id: str) -> TemplateRecord:
    row = (
        await conn.execute(
            select(templates).where(
                templates.c.tenant_id == tenant_id, templates.c.id == template_id
            )
        )
    ).first()
    if row is None:
        raise not_found("template", template_id)
    return _record(row)


async def list_records(
    conn: AsyncConnection, tenant_id: str, *, channel_id: str = "", status: str = ""
) -> list[TemplateRecord]:
    rows = (
        await conn.execute(
            select(templates)
            .where(templates.c.tenant_id == tenant_id)
            .order_by(templates.c.code, templates.c.lang)
        )
    ).all()
    found = [_record(r) for r in rows]
    # Approvals are a small JSON map per row; filtering here works on both engines.
    if channel_id:
        found = [t for t in found if channel_id in t.approvals]
        if status:
            found = [t for t in found if t.approvals[channel_id] == status]
    elif status:
        found = [t for t in found if status in t.approvals.values()]
    return found
