"""Small asyncio helpers shared by the long-running parts of the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


def log_failure(task: asyncio.Future[Any]) -> None:
    """A done-callback: a task that failed is logged, never left unretrieved."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        name = task.get_name() if isinstance(task, asyncio.Task) else "future"
        log.error("background task %s failed", name, exc_info=error)


def supervised(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A long-running task whose failure is logged when it happens.

    Its owner keeps it and cancels it on close; cancel_and_wait does not look
    at tasks that already ended, so without this a loop that died of an
    unexpected error would stop its work silently.
    """
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(log_failure)
    return task


# How long a cancelled task may take to end before it is cancelled again.
RECANCEL_S = 1.0


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel tasks and wait until they have finished.

    asyncio.wait never raises the tasks' CancelledError, so a cancellation of
    the caller itself still propagates; awaiting the task inside
    suppress(CancelledError) would swallow that too.

    A task still running a while after its cancellation is cancelled again:
    a library that turns a cancellation into its own timeout or connection
    error (and the loop around it retrying) would otherwise keep its owner's
    shutdown waiting for ever.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        for task in pending:
            name = task.get_name() if isinstance(task, asyncio.Task) else "future"
            log.warning("task %s outlived its cancellation; cancelling it again", name)


# What a round of a WorkerLoop returns: look again at once (it found a full
# batch, so more is likely waiting), or wait the loop's interval.
AGAIN = 0.0
IDLE = None
# Even a loop that polls without pause waits this long after a failed round.
MIN_FAILURE_WAIT_S = 0.01


class WorkerLoop:
    """Background work done in rounds: claim a batch, work it, sleep while idle.

    ``work`` does one round and returns how long to wait before the next:
    AGAIN, IDLE (the loop's interval) or a number of seconds. wake() cuts a
    wait short: new work was just made, look now. A round that raises is
    logged and the next waits the interval, doubled for each failure in a row
    up to ``max_backoff``, so a store that is away is not hammered; errors
    that ``expected`` calls routine (an unreachable database) are logged
    without their traceback. close() stops the loop, also in the middle of a
    round; what the round started is its owner's to finish.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[float | None]],
        *,
        interval: float,
        idle_first: bool = False,
        settle: float = 0.0,
        max_backoff: float = 5.0,
        expected: Callable[[Exception], bool] = lambda exc: False,
        what: str = "",
        logger: logging.Logger = log,
    ) -> None:
        self.name = name
        self._work = work
        self._what = what or name
        self._interval = interval
        # Wait one interval before the first round (a sweep that has nothing to
        # do at start).
        self._idle_first = idle_first
        # A pause after each wait, so the wakes of a burst share one round.
        self._settle = settle
        self._max_backoff = max(interval, max_backoff)
        self._expected = expected
        self._log = logger
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # failed rounds in a row

    def start(self) -> None:
        self._task = supervised(self._run(), self.name)

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        if self._idle_first:
            await self._pause(self._interval)
        while True:
            # Cleared before the round: a wake during it means look again.
            self._wake.clear()
            try:
                wait = await self._work()
            except Exception as exc:
                wait = self._failed(exc)
            else:
                self.failures = 0
                if wait is None:
                    wait = self._interval
            if wait > 0:
                await self._pause(wait)

    def _failed(self, exc: Exception) -> float:
        self.failures += 1
        doubled = max(self._interval, MIN_FAILURE_WAIT_S) * 2 ** min(self.failures - 1, 30)
        wait = min(doubled, self._max_backoff)
        if self._expected(exc):
            self._log.warning("%s failed: %r; again in %.2f s", self._what, exc, wait)
        else:
            self._log.error("%s failed; again in %.2f s", self._what, wait, exc_info=exc)
        return wait

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        if self._settle:
            await asyncio.sleep(self._settle)


class LoopWorker:
    """A part whose work is one WorkerLoop: it starts and closes with it."""

    _loop: WorkerLoop

    def start(self) -> None:
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()
