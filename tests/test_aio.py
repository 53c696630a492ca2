"""A long-running task that dies of an unexpected error says so at once."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from server.aio import cancel_and_wait, supervised


async def test_a_supervised_loop_that_dies_is_logged_when_it_dies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def loop() -> None:
        raise ValueError("an error no except clause expected")

    caplog.set_level(logging.ERROR, logger="server.aio")
    task = supervised(loop(), "some-loop")
    await asyncio.wait([task])
    await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    logged = [r for r in caplog.records if "some-loop" in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], ValueError)
    # What an owner's close does; cancel_and_wait skips a task already ended,
    # so only the callback retrieved the error (the autouse fixture checks).
    await cancel_and_wait(task)
    del task
    gc.collect()
