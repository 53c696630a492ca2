"""Channels created over the API: their adapters are built, started and swapped here,
in the same dicts the dispatcher, the senders and the callback routes read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Protocol

from adapters.base import AdapterContext
from adapters.registry import PROVIDERS, build_adapter
from server.domain.models import Channel, Receipt
from server.domain.provider import ChannelAdapter


class ChannelLimits(Protocol):
    """Whoever enforces per-channel in-flight bounds and TPS (the dispatcher)."""

    def set_channel(self, channel: Channel) -> None: ...

    def forget_channel(self, channel_id: str) -> None: ...


class RuntimeChannels:
    def __init__(
        self,
        channels: MutableMapping[str, Channel],
        adapters: MutableMapping[str, ChannelAdapter],
        on_receipt: Callable[[str, Receipt], Awaitable[None]],
        *,
        sandbox_delay: float,
        limits: ChannelLimits | None = None,
    ) -> None:
        self._limits = limits
        self._channels = channels
        self._adapters = adapters
        self._on_receipt = on_receipt
        self._sandbox_delay = sandbox_delay
        # Set once the HTTP port, and so the callback URL, is known.
        self.context: AdapterContext | None = None

    def check(self, channel: Channel) -> None:
        if channel.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {channel.provider!r}; use {', '.join(PROVIDERS)}")
        # Adapters read their settings when built and open nothing until started.
        self.build(channel)

    def build(self, channel: Channel) -> ChannelAdapter:
        if self.context is None:
            raise ValueError("channels cannot be built before the server has started")
        try:
            return build_adapter(channel, self.context, sandbox_delay=self._sandbox_delay)
        except (KeyError, TypeError, ValueError) as exc:
            # Missing or malformed provider settings: the caller's to fix.
            raise ValueError(f"channel {channel.channel_id}: {exc}") from exc

    async def add(self, channel: Channel) -> None:
        adapter = self.build(channel)
        await adapter.start(self._on_receipt)
        old = self._adapters.get(channel.channel_id)
        self._adapters[channel.channel_id] = adapter
        self._channels[channel.channel_id] = channel
        if self._limits is not None:
            self._limits.set_channel(channel)
        if old is not None and old is not adapter:
            await old.close()

    async def remove(self, channel_id: str) -> None:
        self._channels.pop(channel_id, None)
        if self._limits is not None:
            self._limits.forget_channel(channel_id)
        adapter = self._adapters.pop(channel_id, None)
        if adapter is not None:
            await adapter.close()
