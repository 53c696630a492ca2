"""The first key: from the environment, or made once for an empty database."""

from __future__ import annotations

import logging

from server.api.context import DEFAULT_TENANT
from server.config import Settings
from server.storage.store import SqlStore

log = logging.getLogger(__name__)


async def bootstrap_keys(settings: Settings, store: SqlStore) -> None:
    try:
        await _bootstrap(settings, store)
    except Exception:
        # Replicas starting together race to make the same rows; the loser
        # finds them made on a second look, and anything else fails again loudly.
        log.info("bootstrap raced another process; checking again")
        await _bootstrap(settings, store)


async def _bootstrap(settings: Settings, store: SqlStore) -> None:
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
