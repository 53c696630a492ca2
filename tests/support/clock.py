"""A clock the test moves by hand, and a polling helper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FakeClock:
    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


async def eventually(
    check: Callable[[], bool], within: float = 10.0, interval: float = 0.02
) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polling state the test does not own
            await asyncio.sleep(interval)


async def stays(check: Callable[[], bool], duration: float = 0.6, interval: float = 0.02) -> bool:
    """True if check holds for the whole duration."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    while loop.time() < end:
        if not check():
            return False
        await asyncio.sleep(interval)
    return True
