"""Keeps this replica's channels in step with the channels stored by every replica.

A tenant's channel is created, changed or deleted on one replica; the others
apply it when they hear a notice (with Redis) or when their poll of the
channels table sees it changed. Until a replica has applied a channel it
neither accepts sends on it nor claims its messages, so nothing fails for
want of news.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from server.aio import IDLE, WorkerLoop
from server.channels import ChannelRegistry
from server.domain.models import Channel

log = logging.getLogger(__name__)


class StoredChannels(Protocol):
    async def stored_channels(self) -> list[tuple[str, Channel]]: ...

    async def channels_fingerprint(self) -> tuple[int, int, int]: ...


class Notices(Protocol):
    def announce(self) -> None: ...

    async def start(self, heard: Callable[[], None]) -> None: ...

    async def close(self) -> None: ...


class ChannelSync:
    def __init__(
        self,
        store: StoredChannels,
        channels: ChannelRegistry,
        from_file: Sequence[Channel],
        *,
        interval: float = 1.0,
        notices: Notices | None = None,
    ) -> None:
        self._store = store
        self._channels = channels
        self._file_ids = frozenset(c.channel_id for c in from_file)
        self._notices = notices
        self._seen: tuple[int, int, int] | None = None
        self._loop = WorkerLoop(
            "channel-sync",
            self._round,
            interval=interval,
            idle_first=True,
            what="reading the stored channels",
            logger=log,
        )
        self._lock = asyncio.Lock()
        self._shadowed: set[str] = set()

    def changed_here(self) -> None:
        """The stored channels were changed on this replica: tell the others."""
        if self._notices is not None:
            self._notices.announce()

    def heard(self) -> None:
        """Another replica changed the stored channels: read them now."""
        self._seen = None
        self._loop.wake()

    async def start(self) -> None:
        await self.sync()
        if self._notices is not None:
            await self._notices.start(self.heard)
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()
        if self._notices is not None:
            await self._notices.close()

    async def _round(self) -> float | None:
        await self.sync_if_changed()
        return IDLE

    async def sync_if_changed(self) -> None:
        fingerprint = await self._store.channels_fingerprint()
        if fingerprint != self._seen:
            await self.sync(fingerprint)

    async def sync(self, fingerprint: tuple[int, int, int] | None = None) -> None:
        """Apply every stored channel that differs from the one served here, and
        drop the tenants' channels that are no longer stored."""
        async with self._lock:
            if fingerprint is None:
                fingerprint = await self._store.channels_fingerprint()
            # Read after the fingerprint: a change in between shows at the next poll.
            stored = await self._store.stored_channels()
            kept: set[str] = set()
            for owner, channel in stored:
                channel_id = channel.channel_id
                if channel_id in self._file_ids:
                    # The channels file wins a clash of ids.
                    if channel_id not in self._shadowed:
                        self._shadowed.add(channel_id)
                        log.warning(
                            "tenant %s's channel %s is shadowed by the channels file",
                            owner,
                            channel_id,
                        )
                    continue
                kept.add(channel_id)
                entry = self._channels.get(channel_id)
                if entry is not None and entry.owner == owner and entry.channel == channel:
                    continue
                log.info("channel %s of tenant %s is now served here", channel_id, owner)
                await self._channels.load(channel, owner)
            for entry in self._channels.entries():
                channel_id = entry.channel.channel_id
                if entry.owner is not None and channel_id not in kept:
                    log.info("channel %s was deleted; no longer served here", channel_id)
                    await self._channels.remove(channel_id)
            self._seen = fingerprint
