"""Small asyncio helpers shared by the long-running parts of the server."""

from __future__ import annotations

import asyncio
from typing import Any


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
