"""Message templates and their per-channel approval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.batch import Template
from server.domain.models import new_id
from server.storage.schema import templates
from server.storage.writer import Tx


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
