"""Per-channel send pacing shared by every replica through Redis.

Each send reserves the next free slot of its channel in one Lua script: slots
are 1/tps apart on Redis's own clock, so replicas never add up to more than
the channel's TPS. If Redis cannot be reached, a replica paces on its own
until it can (the channel may then see up to one TPS per replica).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.dispatch.pacing import Pacer
from server.domain.models import Channel

log = logging.getLogger(__name__)

# KEYS[1]: the channel's next free slot (microseconds, Redis clock).
# ARGV[1]: slot length in microseconds. Returns how long to wait for ours.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval = tonumber(ARGV[1])
local slot = math.max(free, now)
redis.call('SET', KEYS[1], string.format('%d', slot + interval),
           'PX', math.floor((slot + interval - now) / 1000) + 1000)
return slot - now
"""


class RedisPacer:
    def __init__(self, client: aioredis.Redis, channel_id: str, tps: float) -> None:
        self._client = client
        self._key = f"cimhub:pace:{channel_id}"
        self._interval_us = max(1, int(1_000_000 / tps))
        self._script = client.register_script(_RESERVE)
        self._local = Pacer(tps)
        self._failing = False

    async def wait(self) -> None:
        try:
            wait_us = int(await self._script(keys=[self._key], args=[self._interval_us]))
        except (RedisError, OSError) as exc:
            if not self._failing:
                log.warning("pacing %s locally, Redis unreachable: %s", self._key, exc)
            self._failing = True
            await self._local.wait()
            return
        self._failing = False
        if wait_us > 0:
            await asyncio.sleep(wait_us / 1_000_000)


class SharedPacing:
    """One Redis connection pool for the pacers of every paced channel."""

    def __init__(self, url: str) -> None:
        self._client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def pacer_for(self, channel: Channel) -> RedisPacer:
        return RedisPacer(self._client, channel.channel_id, channel.tps)

    async def close(self) -> None:
        await self._client.aclose()
