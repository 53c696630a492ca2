"""cimhub tenants / keys: administer tenants and API keys directly in the database."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from server.config import Settings
from server.domain.errors import DomainError
from server.storage.auth import KeyRecord, NewKey


def register(subparsers: Any) -> None:
    tenants = subparsers.add_parser("tenants", help="manage tenants")
    tenant_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = tenant_sub.add_parser("create", help="create a tenant")
    create.add_argument("name", help="tenant id (also its display name)")
    _database_flag(create)
    create.set_defaults(handler=_run(_create_tenant))

    keys = subparsers.add_parser("keys", help="manage API keys")
    key_sub = keys.add_subparsers(dest="keys_command", required=True)
    make = key_sub.add_parser("create", help="create a key; its secret is printed once")
    make.add_argument("--tenant", required=True)
    make.add_argument("--app", default="", help="app id (default: the tenant id)")
    _database_flag(make)
    make.set_defaults(handler=_run(_create_key))
    listing = key_sub.add_parser("list", help="list a tenant's keys (never their secrets)")
    listing.add_argument("--tenant", required=True)
    _database_flag(listing)
    listing.set_defaults(handler=_run(_list_keys))
    revoke = key_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("api_id")
    _database_flag(revoke)
    revoke.set_defaults(handler=_run(_revoke_key))


def _database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="SQLAlchemy URL (env CIMHUB_DATABASE_URL)")


class KeyAdmin(Protocol):
    async def create_tenant(self, tenant_id: str, name: str = "") -> None: ...

    async def create_api_key(self, tenant_id: str, app_id: str = "") -> NewKey: ...

    async def list_api_keys(self, tenant_id: str) -> list[KeyRecord]: ...

    async def revoke_api_key(self, api_id: str) -> bool: ...


Command = Callable[[KeyAdmin, argparse.Namespace], Awaitable[int]]


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        url = args.database_url or Settings.from_env(dict(os.environ)).database_url
        return asyncio.run(_with_keys(url, command, args))

    return handler


async def _with_keys(url: str, command: Command, args: argparse.Namespace) -> int:
    # Imported here: the hub's parts load only when a command needs the database.
    from server.app.database import tenant_keys

    async with tenant_keys(url) as keys:
        try:
            return await command(keys, args)
        except DomainError as err:
            print(f"cimhub: {err.message}", file=sys.stderr)
            return 1


async def _create_tenant(keys: KeyAdmin, args: argparse.Namespace) -> int:
    await keys.create_tenant(args.name)
    print(f"tenant {args.name} created")
    return 0


async def _create_key(keys: KeyAdmin, args: argparse.Namespace) -> int:
    key = await keys.create_api_key(args.tenant, args.app)
    print(f"x-api-id:  {key.api_id}")
    print(f"x-api-key: {key.secret}")
    print("the secret is shown only now; store it safely")
    return 0


async def _list_keys(keys: KeyAdmin, args: argparse.Namespace) -> int:
    print("api_id\tapp_id\tcreated_at_ms\tstate")
    for key in await keys.list_api_keys(args.tenant):
        state = "revoked" if key.revoked_at is not None else "active"
        print(f"{key.api_id}\t{key.app_id}\t{key.created_at}\t{state}")
    return 0


async def _revoke_key(keys: KeyAdmin, args: argparse.Namespace) -> int:
    if not await keys.revoke_api_key(args.api_id):
        print(f"cimhub: no key {args.api_id}", file=sys.stderr)
        return 1
    # A running server notices within its key cache lifetime (a few seconds).
    print(f"key {args.api_id} revoked")
    return 0
