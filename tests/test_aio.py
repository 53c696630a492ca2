"""Long-running tasks: failures are logged when they happen; worker loops wake, back off, stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import pytest

from server import aio
from server.aio import AGAIN, IDLE, WorkerLoop, cancel_and_wait, supervised


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


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aio, "RECANCEL_S", 0.05)
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                # As a client library that reports a cancelled read as its own
                # error, to a loop that retries on that error.
                if swallowed:
                    raise
                swallowed += 1

    caplog.set_level(logging.WARNING, logger="server.aio")
    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait(task)
    assert task.cancelled()
    assert swallowed == 1
    assert any("stubborn-loop" in r.getMessage() for r in caplog.records)


class Rounds:
    """A round that counts itself and answers as told."""

    def __init__(self, answer: float | None = IDLE, fail: int = 0) -> None:
        self.count = 0
        self.answer = answer
        self.fail = fail  # the first rounds that raise
        self.changed = asyncio.Event()

    async def __call__(self) -> float | None:
        self.count += 1
        self.changed.set()
        await asyncio.sleep(0)
        if self.count <= self.fail:
            raise ConnectionError(f"round {self.count}")
        return self.answer

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(5):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def running(loop: WorkerLoop) -> AsyncIterator[WorkerLoop]:
    loop.start()
    try:
        yield loop
    finally:
        await loop.close()


async def busy_for(rounds: int) -> None:
    """Lets a loop that never waits do many rounds: the others had every chance to run."""
    busy = Rounds(AGAIN)
    async with running(WorkerLoop("busy", busy, interval=60)):
        await busy.reach(rounds)


async def test_an_idle_loop_sleeps_its_interval_and_a_busy_one_does_not() -> None:
    idle = Rounds(IDLE)
    async with running(WorkerLoop("idle", idle, interval=60)):
        await idle.reach(1)
        await busy_for(200)
        assert idle.count == 1


async def test_a_wake_cuts_the_wait_short() -> None:
    idle = Rounds(IDLE)
    async with running(WorkerLoop("idle", idle, interval=60)) as loop:
        await idle.reach(1)
        loop.wake()
        await idle.reach(2)
        await busy_for(50)
        assert idle.count == 2  # one wake, one extra round


async def test_a_loop_told_to_wait_first_waits_for_its_interval_or_a_wake() -> None:
    later = Rounds(IDLE)
    async with running(WorkerLoop("later", later, interval=60, idle_first=True)) as loop:
        await busy_for(200)
        assert later.count == 0
        loop.wake()
        await later.reach(1)


async def test_a_failing_round_is_logged_and_the_next_waits_longer_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="server.aio")
    flaky = Rounds(IDLE, fail=4)
    loop = WorkerLoop("flaky", flaky, interval=0.01, max_backoff=0.04, what="sweeping")
    async with running(loop):
        await flaky.reach(6)
    failed = [r for r in caplog.records if r.getMessage().startswith("sweeping failed")]
    waits = [r.getMessage().rsplit("again in ", 1)[1] for r in failed]
    assert waits == ["0.01 s", "0.02 s", "0.04 s", "0.04 s"]
    # Unforeseen errors come with their traceback, at ERROR.
    assert all(r.levelno == logging.ERROR and r.exc_info for r in failed)
    assert loop.failures == 0  # the fifth round worked: the count starts over


async def test_an_expected_error_is_a_warning_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="server.aio")
    flaky = Rounds(IDLE, fail=1)
    routine = WorkerLoop(
        "flaky", flaky, interval=0.01, expected=lambda e: isinstance(e, ConnectionError)
    )
    async with running(routine):
        await flaky.reach(2)
    (record,) = [r for r in caplog.records if "flaky failed" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "round 1" in record.getMessage()


async def test_close_stops_the_loop_in_the_middle_of_a_round_and_while_it_waits() -> None:
    left: list[str] = []

    async def never_ends() -> float | None:
        try:
            await asyncio.Event().wait()
        finally:
            left.append("round")
        return IDLE

    async def waits() -> float | None:
        left.append("waiting")
        return 60

    for work, what in ((never_ends, "round"), (waits, "waiting")):
        loop = WorkerLoop("stopping", work, interval=60)
        loop.start()
        await busy_for(10)
        async with asyncio.timeout(5):
            await loop.close()
        assert what in left
    busy = Rounds(AGAIN)
    async with running(WorkerLoop("stopped", busy, interval=60)):
        await busy.reach(10)
    after_close = busy.count
    await busy_for(100)
    assert busy.count == after_close
