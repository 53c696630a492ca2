"""Tenants, apps and API keys. Only a SHA-256 of a key's secret is ever stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import Code, DomainError, not_found
from server.storage.tenant_schema import api_keys, apps, tenants
from server.storage.tx import Tx

# What making sure of a configured key found and did.
EnsuredKey = Literal["created", "updated", "unchanged", "revoked"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What a lookup by api id returns: never the secret, only its digest."""

    api_id: str
    tenant_id: str
    app_id: str
    secret_sha256: bytes
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: the only moment the secret exists in the clear."""

    api_id: str
    secret: str
    tenant_id: str
    app_id: str


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret() -> str:
    # 32 random bytes: far beyond the 128 bits a guessed secret would need.
    return secrets.token_urlsafe(32)


def new_api_id() -> str:
    return "ak_" + secrets.token_hex(12)


async def tenant_exists(conn: AsyncConnection, tenant_id: str) -> bool:
    found = await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id))
    return found.first() is not None


async def count_tenants(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(tenants))).scalar_one())


async def create_tenant(tx: Tx, tenant_id: str, name: str = "") -> None:
    if await tenant_exists(tx.conn, tenant_id):
        raise DomainError(
            Code.ALREADY_EXISTS, "TENANT_EXISTS", f"tenant {tenant_id!r} already exists"
        )
    await tx.conn.execute(
        tenants.insert().values(id=tenant_id, name=name or tenant_id, created_at=tx.now)
    )


async def ensure_tenant(tx: Tx, tenant_id: str) -> None:
    if not await tenant_exists(tx.conn, tenant_id):
        await tx.conn.execute(
            tenants.insert().values(id=tenant_id, name=tenant_id, created_at=tx.now)
        )


async def ensure_app(tx: Tx, tenant_id: str, app_id: str) -> None:
    """Make app_id belong to tenant_id; an app id already held by another tenant is refused."""
    found = await tx.conn.execute(select(apps.c.tenant_id).where(apps.c.id == app_id))
    row = found.first()
    if row is None:
        await tx.conn.execute(
            apps.insert().values(id=app_id, tenant_id=tenant_id, name=app_id, created_at=tx.now)
        )
    elif row.tenant_id != tenant_id:
        raise DomainError(
            Code.ALREADY_EXISTS, "APP_EXISTS", f"app {app_id!r} belongs to another tenant"
        )


async def create_key(
    tx: Tx, tenant_id: str, app_id: str, *, api_id: str = "", secret: str = ""
) -> NewKey:
    if not await tenant_exists(tx.conn, tenant_id):
        raise not_found("tenant", tenant_id)
    await ensure_app(tx, tenant_id, app_id)
    key = NewKey(api_id or new_api_id(), secret or new_secret(), tenant_id, app_id)
    await tx.conn.execute(
        api_keys.insert().values(
            api_id=key.api_id,
            tenant_id=tenant_id,
            app_id=app_id,
            secret_sha256=digest(key.secret),
            created_at=tx.now,
        )
    )
    return key


async def ensure_key(tx: Tx, tenant_id: str, api_id: str, secret: str) -> EnsuredKey:
    """Make the given key exist for tenant_id, unless it was revoked."""
    await ensure_tenant(tx, tenant_id)
    found = await get_key(tx.conn, api_id)
    if found is None:
        await create_key(tx, tenant_id, tenant_id, api_id=api_id, secret=secret)
        return "created"
    if found.tenant_id != tenant_id:
        raise DomainError(
            Code.ALREADY_EXISTS, "API_ID_EXISTS", f"api id {api_id!r} belongs to another tenant"
        )
    if found.revoked_at is not None:
        # A revocation is an operator's decision; configuration left behind
        # must not undo it. A new key needs a new api id.
        return "revoked"
    if found.secret_sha256 == digest(secret):
        return "unchanged"
    # The configured secret is the truth: a changed one replaces the stored digest.
    await tx.conn.execute(
        update(api_keys).where(api_keys.c.api_id == api_id).values(secret_sha256=digest(secret))
    )
    return "updated"


async def get_key(conn: AsyncConnection, api_id: str) -> KeyRecord | None:
    found = await conn.execute(select(api_keys).where(api_keys.c.api_id == api_id))
    row = found.first()
    if row is None:
        return None
    return KeyRecord(
        row.api_id,
        row.tenant_id,
        row.app_id,
        bytes(row.secret_sha256),
        row.created_at,
        row.revoked_at,
    )


async def list_keys(conn: AsyncConnection, tenant_id: str) -> list[KeyRecord]:
    found = await conn.execute(
        select(api_keys)
        .where(api_keys.c.tenant_id == tenant_id)
        .order_by(api_keys.c.created_at, api_keys.c.api_id)
    )
    return [
        KeyRecord(
            r.api_id, r.tenant_id, r.app_id, bytes(r.secret_sha256), r.created_at, r.revoked_at
        )
        for r in found
    ]


async def revoke_key(tx: Tx, api_id: str) -> bool:
    """Revoke api_id; False when there is no such key. Revoking twice keeps the first time."""
    if await get_key(tx.conn, api_id) is None:
        return False
    await tx.conn.execute(
        update(api_keys)
        .where(api_keys.c.api_id == api_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=tx.now)
    )
    return True


async def tenant_of_app(conn: AsyncConnection, app_id: str) -> str | None:
    found = await conn.execute(select(apps.c.tenant_id).where(apps.c.id == app_id))
    row = found.first()
    return None if row is None else str(row.tenant_id)
