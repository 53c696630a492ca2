"""A tenant's channels as use cases: create, change, delete.

A change is stored first, then the other replicas are told, then this process
serves it; every replica applies the stored change (server/dispatch/channel_sync.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from adapters.policy import tenant_settings_violations
from adapters.settings import SettingError
from server.channels import ChannelEntry, ChannelRegistry
from server.domain.errors import (
    FieldViolation,
    already_exists,
    failed_precondition,
    invalid,
    not_found,
)
from server.domain.models import Channel


class ChannelRows(Protocol):
    async def insert_channel(self, tenant_id: str, channel: Channel) -> Channel: ...

    async def replace_channel(self, tenant_id: str, channel: Channel) -> Channel: ...

    async def delete_channel(self, tenant_id: str, channel_id: str) -> None: ...


class TenantChannels:
    def __init__(
        self,
        registry: ChannelRegistry,
        rows: ChannelRows,
        *,
        url_check: Callable[[str], str | None],
        changed: Callable[[], None],
    ) -> None:
        self._registry = registry
        self._rows = rows
        # Refuses tenant channel endpoints the outbound guard would refuse.
        self._url_check = url_check
        # Tells the other replicas once a change is stored.
        self._changed = changed

    def visible(self, tenant: str, channel_id: str) -> ChannelEntry:
        entry = self._registry.get(channel_id)
        if entry is None or not entry.visible_to(tenant):
            raise not_found("channel", channel_id)
        return entry

    def owned(self, tenant: str, channel_id: str) -> ChannelEntry:
        entry = self.visible(tenant, channel_id)
        if entry.from_file:
            raise failed_precondition(
                "CHANNEL_READ_ONLY", f"channel {channel_id!r} comes from the channels file"
            )
        return entry

    async def create(self, tenant: str, channel: Channel) -> ChannelEntry:
        existing = self._registry.get(channel.channel_id)
        if existing is not None and existing.visible_to(tenant):
            raise already_exists("CHANNEL_EXISTS", f"channel {channel.channel_id!r} already exists")
        if existing is not None:
            # Ids are one namespace; the answer must not tell that another tenant has it.
            raise invalid([FieldViolation("channelId", "is not available; choose another id")])
        self._check(tenant, channel)
        await self._rows.insert_channel(tenant, channel)
        self._changed()
        return await self._registry.put(channel, tenant)

    async def update(self, tenant: str, channel: Channel) -> ChannelEntry:
        self.owned(tenant, channel.channel_id)
        self._check(tenant, channel)
        await self._rows.replace_channel(tenant, channel)
        self._changed()
        return await self._registry.put(channel, tenant)

    async def delete(self, tenant: str, channel_id: str) -> None:
        self.owned(tenant, channel_id)
        await self._rows.delete_channel(tenant, channel_id)
        self._changed()
        await self._registry.remove(channel_id)

    def _check(self, tenant: str, channel: Channel) -> None:
        """Settings pass the tenant policy, and an adapter can be built from them."""
        problems = tenant_settings_violations(channel, self._url_check)
        if problems:
            raise invalid(problems)
        try:
            self._registry.build(channel, tenant)
        except SettingError as exc:
            raise invalid([FieldViolation(f"settings.{exc.setting}", str(exc))]) from exc
        except ValueError as exc:
            raise invalid([FieldViolation("settings", str(exc))]) from exc
