"""Small asyncio helpers shared by the long-running parts of the server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
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


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel tasks and wait until they have finished.

    asyncio.wait never raises the tasks' CancelledError, so a cancellation of
    the caller itself still propagates; awaiting the task inside
    suppress(CancelledError) would swallow that too.
    """
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
