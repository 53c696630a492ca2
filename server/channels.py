"""The one owner of every channel: its settings, its adapter, and who it belongs to.

Channels come from the operator's channels file (owner None, visible to every
tenant, read-only over the API) or are created by a tenant (visible to that
tenant alone). The dispatcher, the inbound paths, the provider callbacks and
the servicers all read this registry live; none of them keeps a copy, so a
channel created, changed or removed at runtime is seen everywhere at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from server.domain.models import Channel
from server.domain.provider import ChannelAdapter, ReceiptSink

log = logging.getLogger(__name__)

# (channel, owner) -> a built but not yet started adapter; raises on bad settings.
AdapterFactory = Callable[[Channel, "str | None"], ChannelAdapter]
# (channel id, the new entry or None once removed)
Listener = Callable[[str, "ChannelEntry | None"], None]


@dataclass(frozen=True, slots=True)
class ChannelEntry:
    channel: Channel
    # The tenant that created the channel; None for the operator's channels file.
    owner: str | None
    # None when the adapter could not be built or started; `problem` says why.
    adapter: ChannelAdapter | None
    problem: str = ""

    @property
    def from_file(self) -> bool:
        return self.owner is None

    @property
    def healthy(self) -> bool:
        return self.adapter is not None

    def visible_to(self, tenant: str) -> bool:
        return self.owner is None or self.owner == tenant


class ChannelRegistry:
    def __init__(self, on_receipt: ReceiptSink) -> None:
        self._entries: dict[str, ChannelEntry] = {}
        self._listeners: list[Listener] = []
        self._on_receipt = on_receipt
        self._build: AdapterFactory | None = None
        # tenant -> its visible channels; the send path asks on every request.
        self._visible: dict[str, Mapping[str, Channel]] = {}

    @property
    def on_receipt(self) -> ReceiptSink:
        """Where every channel's delivery receipts go."""
        return self._on_receipt

    def bind(self, build: AdapterFactory) -> None:
        """Adapters can be built once the callback URL is known, after the HTTP port binds."""
        self._build = build

    # -- reads --------------------------------------------------------------
    def get(self, channel_id: str) -> ChannelEntry | None:
        return self._entries.get(channel_id)

    def channel(self, channel_id: str) -> Channel | None:
        entry = self._entries.get(channel_id)
        return entry.channel if entry is not None else None

    def adapter(self, channel_id: str) -> ChannelAdapter | None:
        entry = self._entries.get(channel_id)
        return entry.adapter if entry is not None else None

    def owner_of(self, channel_id: str) -> str | None:
        entry = self._entries.get(channel_id)
        return entry.owner if entry is not None else None

    def entries(self) -> Iterator[ChannelEntry]:
        return iter(list(self._entries.values()))

    def visible_to(self, tenant: str) -> Mapping[str, Channel]:
        """The operator's channels and the tenant's own, by id."""
        cached = self._visible.get(tenant)
        if cached is None:
            cached = {cid: e.channel for cid, e in self._entries.items() if e.visible_to(tenant)}
            self._visible[tenant] = cached
        return cached

    def adapters_for(self, owner: str | None) -> Callable[[str], ChannelAdapter | None]:
        """Another channel's adapter as a channel of `owner` may use it (an SMS
        fallback, say): a tenant's channels reach the operator's and that
        tenant's own, the operator's reach only the operator's."""

        def lookup(channel_id: str) -> ChannelAdapter | None:
            entry = self._entries.get(channel_id)
            if entry is None or entry.owner not in (None, owner):
                return None
            return entry.adapter

        return lookup

    def is_visible(self, tenant: str, channel_id: str) -> bool:
        entry = self._entries.get(channel_id)
        return entry is not None and entry.visible_to(tenant)

    # -- changes ------------------------------------------------------------
    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def build(self, channel: Channel, owner: str | None) -> ChannelAdapter:
        """A new adapter for the channel; ValueError names what is wrong with its settings."""
        if self._build is None:
            raise ValueError("channels cannot be built before the server has started")
        try:
            return self._build(channel, owner)
        except (KeyError, TypeError) as exc:
            # Adapters' own ValueErrors name the channel already.
            raise ValueError(f"channel {channel.channel_id}: {exc!s}") from exc

    async def load(self, channel: Channel, owner: str | None) -> ChannelEntry:
        """Take on a channel read from configuration or the database, at start or
        when another replica changed it. A channel whose adapter cannot be built
        or started is kept, marked unhealthy and logged, so the rest still serve."""
        try:
            adapter = self.build(channel, owner)
        except Exception as exc:
            log.error("channel %s is not serving: %s", channel.channel_id, exc)
            return await self._install(ChannelEntry(channel, owner, None, problem=str(exc)))
        return await self._start(channel, owner, adapter)

    async def put(self, channel: Channel, owner: str | None) -> ChannelEntry:
        """Add or replace a channel. Bad settings raise ValueError and change
        nothing; an adapter that fails to start leaves the channel unhealthy."""
        return await self._start(channel, owner, self.build(channel, owner))

    async def _start(
        self, channel: Channel, owner: str | None, adapter: ChannelAdapter
    ) -> ChannelEntry:
        try:
            await adapter.start(self._on_receipt)
        except Exception as exc:
            log.error("channel %s is not serving: %s", channel.channel_id, exc)
            return await self._install(ChannelEntry(channel, owner, None, problem=str(exc)))
        return await self._install(ChannelEntry(channel, owner, adapter))

    async def _install(self, entry: ChannelEntry) -> ChannelEntry:
        """Serve the entry in place of the channel's old one, whose adapter closes."""
        old = self._entries.get(entry.channel.channel_id)
        self._set(entry)
        if old is not None and old.adapter is not None and old.adapter is not entry.adapter:
            await old.adapter.close()
        return entry

    async def use_adapter(self, channel_id: str, adapter: ChannelAdapter) -> None:
        """Serve an existing channel through the given adapter (tests watch sends this way)."""
        old = self._entries.get(channel_id)
        channel = old.channel if old is not None else _placeholder(channel_id)
        await adapter.start(self._on_receipt)
        await self._install(ChannelEntry(channel, old.owner if old is not None else None, adapter))

    async def remove(self, channel_id: str) -> None:
        old = self._entries.pop(channel_id, None)
        if old is None:
            return
        self._changed(channel_id, None)
        if old.adapter is not None:
            await old.adapter.close()

    async def close(self) -> None:
        for entry in self.entries():
            if entry.adapter is not None:
                try:
                    await entry.adapter.close()
                except Exception:
                    log.exception(
                        "closing the adapter of channel %s failed", entry.channel.channel_id
                    )

    def _set(self, entry: ChannelEntry) -> ChannelEntry:
        self._entries[entry.channel.channel_id] = entry
        self._changed(entry.channel.channel_id, entry)
        return entry

    def _changed(self, channel_id: str, entry: ChannelEntry | None) -> None:
        self._visible.clear()
        for listener in self._listeners:
            listener(channel_id, entry)


def _placeholder(channel_id: str) -> Channel:
    # An adapter handed in for an id no configuration names: sends on it still
    # need a channel's limits, so it gets the defaults.
    return Channel(channel_id, "SANDBOX", "custom", sandbox=True)
