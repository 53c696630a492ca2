"""Word between replicas that the stored channels changed.

A notice carries no channel data: the database holds the channels, and a
replica that hears a notice re-reads them. Notices only make a change arrive
at once; a replica that misses one (Redis away, a reconnect) still finds the
change at its next poll of the channels table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.aio import cancel_and_wait, supervised

log = logging.getLogger(__name__)
TOPIC = "cimhub:channels"


class RedisChannelNotices:
    """Publishes and hears channel-change notices on one Redis pub/sub topic."""

    def __init__(self, url: str, topic: str = TOPIC, retry_interval: float = 1.0) -> None:
        self._url = url
        self._topic = topic
        self._retry_interval = retry_interval
        self._redis = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._pending = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failing = False

    def announce(self) -> None:
        """This replica changed the stored channels; tell the others (never blocks)."""
        self._pending.set()

    async def start(self, heard: Callable[[], None]) -> None:
        self._tasks = [
            supervised(self._publish_loop(), "channel-notices-publish"),
            supervised(self._listen_loop(heard), "channel-notices-listen"),
        ]

    async def close(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        await self._redis.aclose()

    async def _publish_loop(self) -> None:
        while True:
            await self._pending.wait()
            # Changes made while a notice is on its way share the next one.
            self._pending.clear()
            try:
                await self._redis.publish(self._topic, "changed")
            except (RedisError, OSError) as exc:
                # The others find the change at their next poll.
                log.warning("channel notices: publishing failed (%s)", exc)

    async def _listen_loop(self, heard: Callable[[], None]) -> None:
        while True:
            try:
                pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=True)
                async with pubsub:
                    await pubsub.subscribe(self._topic)
                    if self._failing:
                        log.warning("channel notices: Redis is back")
                    self._failing = False
                    # Whatever changed while not subscribed was not heard.
                    heard()
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            heard()
            except (RedisError, OSError) as exc:
                if not self._failing:
                    log.warning("channel notices: lost Redis (%s); polling only", exc)
                self._failing = True
                await asyncio.sleep(self._retry_interval)
