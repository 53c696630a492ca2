"""The first key: from the environment, or made once for an empty database."""

from __future__ import annotations

import logging
from typing import Protocol

from server.api.context import DEFAULT_TENANT
from server.config import Settings
from server.storage.auth import EnsuredKey, NewKey

log = logging.getLogger(__name__)


class KeyStore(Protocol):
    async def ensure_api_key(self, tenant_id: str, api_id: str, secret: str) -> EnsuredKey: ...

    async def count_tenants(self) -> int: ...

    async def create_tenant(self, tenant_id: str, name: str = "") -> None: ...

    async def create_api_key(self, tenant_id: str, app_id: str = "") -> NewKey: ...

    async def tenant_of_app(self, app_id: str) -> str | None: ...

    async def ensure_app(self, tenant_id: str, app_id: str) -> None: ...


async def bootstrap_keys(settings: Settings, store: KeyStore) -> None:
    try:
        await _bootstrap(settings, store)
    except Exception:
        # Replicas starting together race to make the same rows; the loser
        # finds them made on a second look, and anything else fails again loudly.
        log.info("bootstrap raced another process; checking again")
        await _bootstrap(settings, store)


async def _bootstrap(settings: Settings, store: KeyStore) -> None:
    if settings.bootstrap_api_id:
        outcome = await store.ensure_api_key(
            DEFAULT_TENANT, settings.bootstrap_api_id, settings.bootstrap_api_key
        )
        if outcome == "revoked":
            log.warning(
                "the configured bootstrap key %s is revoked and stays so; "
                "configure another api id or remove CIMHUB_BOOTSTRAP_API_ID",
                settings.bootstrap_api_id,
            )
        elif outcome != "unchanged":
            log.info(
                "bootstrap key %s %s for tenant %s",
                settings.bootstrap_api_id,
                outcome,
                DEFAULT_TENANT,
            )
    elif await store.count_tenants() == 0:
        await store.create_tenant(DEFAULT_TENANT, "Default")
        key = await store.create_api_key(DEFAULT_TENANT)
        # Shown this once, on stdout only: the database keeps just its digest.
        print(
            "cimhub: created tenant 'default' with an API key; it is shown only now:\n"
            f"  x-api-id:  {key.api_id}\n"
            f"  x-api-key: {key.secret}",
            flush=True,
        )
    # Apps named in the JWT settings must belong to a tenant to be usable; an
    # app not yet registered joins the default tenant.
    for app_id, _secret in settings.jwt_secrets:
        if await store.tenant_of_app(app_id) is None:
            await store.ensure_app(DEFAULT_TENANT, app_id)
