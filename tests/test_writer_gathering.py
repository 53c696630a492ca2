"""When the group-commit writer waits for more writes, and when it commits at once.

A lone write never waits: the short gathering window opens only while writes
of the same kind (sends, or the others) keep arriving together,
as PostgreSQL's commit_delay waits only when sibling transactions are active.
Once open, it stays open while they still come in, up to a bound. A send
that arrives alone does not wait out a window the others' writes opened, and
sends stop waiting once as many are back as the last group held.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import insert

from server.storage import writer as writer_module
from server.storage.tenant_schema import tenants
from server.storage.tx import StatusMove, Tx, Work
from server.storage.writer import Writer
from support.writer import running_writer

WINDOW_S = 0.05
QUIET_S = 0.1
MOST_S = 2.0


@pytest.fixture
async def writer(db_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Writer]:
    monkeypatch.setattr(writer_module, "GATHER_S", WINDOW_S)
    monkeypatch.setattr(writer_module, "GATHER_QUIET_S", QUIET_S)
    monkeypatch.setattr(writer_module, "GATHER_MAX_S", MOST_S)
    # As the store runs it: on a SQLite file it holds its connection.
    async with running_writer(db_url, Groups(), hold=True) as writer:
        yield writer


class Groups:
    """How many writes each group commit held."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._changed = asyncio.Event()

    def committed(self, _seconds: float, writes: int, _moves: Sequence[StatusMove]) -> None:
        self.sizes.append(writes)
        self._changed.set()

    async def last(self, writes: int) -> int:
        """The size of the last group, once this many writes have committed."""
        while sum(self.sizes) < writes:
            self._changed.clear()
            await self._changed.wait()
        return self.sizes[-1]


def window(writer: Writer, monkeypatch: pytest.MonkeyPatch, seconds: float, most: float) -> Groups:
    """Set the gathering window and its bound; the writer's group sizes."""
    monkeypatch.setattr(writer_module, "GATHER_S", seconds)
    monkeypatch.setattr(writer_module, "GATHER_MAX_S", most)
    groups = writer._observer
    assert isinstance(groups, Groups)
    return groups


def tenant(name: str) -> Work[str]:
    async def work(tx: Tx) -> str:
        await tx.conn.execute(insert(tenants), [{"id": name, "name": name, "created_at": tx.now}])
        return name

    return work


async def burst(writer: Writer, prefix: str, size: int, *, send: bool = True) -> None:
    names = [f"{prefix}{i}" for i in range(size)]
    done = await asyncio.gather(*(writer.submit(tenant(n), send=send) for n in names))
    assert done == names


async def test_writes_one_after_another_never_wait(writer: Writer) -> None:
    for i in range(20):
        await writer.submit(tenant(f"t{i}"), send=True)
    assert writer.gathered == 0


async def test_sends_arriving_together_open_the_window_for_what_follows(writer: Writer) -> None:
    await burst(writer, "a", 8)
    assert writer.gathered == 0  # the first group of a burst never waits
    await burst(writer, "b", 8)  # right after the first group's commit
    assert writer.gathered >= 1


async def test_a_write_after_the_writer_went_quiet_commits_at_once(writer: Writer) -> None:
    await burst(writer, "a", 8)
    # Idle for longer than the window: the burst is over.
    await asyncio.sleep(WINDOW_S * 3)
    await writer.submit(tenant("lone"), send=True)
    assert writer.gathered == 0


async def test_other_writes_open_the_window_for_other_writes_only(writer: Writer) -> None:
    await burst(writer, "a", 8, send=False)
    await writer.submit(tenant("send"), send=True)
    assert writer.gathered == 0  # a send is not kept waiting because claims came together
    await burst(writer, "b", 8, send=False)
    await burst(writer, "c", 8, send=False)
    assert writer.gathered >= 1


async def test_the_window_stays_open_while_writes_keep_coming(writer: Writer) -> None:
    groups = writer._observer
    assert isinstance(groups, Groups)
    await burst(writer, "a", 8)  # opens the window for the sends that follow
    before = len(groups.sizes)

    async def spaced(i: int) -> str:
        # Each arrives well within the quiet time of the one before, and the
        # stream lasts several windows.
        await asyncio.sleep(i * QUIET_S / 5)
        return await writer.submit(tenant(f"s{i}"), send=True)

    names = await asyncio.gather(*(spaced(i) for i in range(20)))
    assert names == [f"s{i}" for i in range(20)]
    # One group, or two if the machine stalled past the quiet time once; a
    # fixed window would have cut the stream into at least four.
    assert len(groups.sizes) - before <= 2
    assert sum(groups.sizes[before:]) == 20


async def open_the_others_window(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> asyncio.Future[str]:
    """Others' writes came together; the next one waits in an open window."""
    opened = asyncio.Event()
    gather = writer._gather

    async def noted(*args: Any) -> None:
        opened.set()
        await gather(*args)

    monkeypatch.setattr(writer, "_gather", noted)
    await burst(writer, "o", 8, send=False)
    waiting = asyncio.ensure_future(writer.submit(tenant("w"), send=False))
    await opened.wait()
    return waiting


async def test_a_lone_send_does_not_wait_out_the_others_window(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = window(writer, monkeypatch, 30.0, most=60.0)
    waiting = await open_the_others_window(writer, monkeypatch)
    # It ends the window: a wait for it would outlast this timeout.
    assert await asyncio.wait_for(writer.submit(tenant("send"), send=True), 5) == "send"
    assert waiting.done() and waiting.result() == "w"
    # The waiting write and the send, in one commit.
    assert await groups.last(writes=10) == 2


async def test_sends_coming_together_join_the_others_window(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await burst(writer, "s", 8)  # sends come together
    groups = window(writer, monkeypatch, 0.5, most=1.0)
    waiting = await open_the_others_window(writer, monkeypatch)
    send = asyncio.ensure_future(writer.submit(tenant("send"), send=True))
    await asyncio.sleep(0.1)
    # More are likely on the way, so the window stays open for them.
    assert not waiting.done() and not send.done()
    assert await send == "send" and await waiting == "w"
    assert await groups.last(writes=18) == 2


async def test_sends_stop_waiting_once_as_many_as_last_time_are_back(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = window(writer, monkeypatch, 30.0, most=60.0)
    await burst(writer, "a", 8)
    # The same eight callers again: nobody else is coming, so they commit
    # after the quiet time. Waiting out the window would outlast the timeout.
    await asyncio.wait_for(burst(writer, "b", 8), 5)
    assert writer.gathered >= 1
    assert await groups.last(writes=16) == 8


async def test_sends_short_of_last_time_wait_for_the_rest(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = window(writer, monkeypatch, 0.6, most=1.0)
    await burst(writer, "a", 8)
    four = asyncio.ensure_future(burst(writer, "b", 4))
    # Twice the quiet time: half of the last group is still out, so the
    # window stays open for them.
    await asyncio.sleep(2 * QUIET_S)
    assert not four.done()
    await burst(writer, "c", 4)
    await four
    assert await groups.last(writes=16) == 8


# SQLite's driver runs on the loop's thread, so a group there never suspends:
# callers that arrive meanwhile reach submit() only once it is done, and the
# writer lets them in before it counts who came during the commit.
@pytest.mark.parametrize("commit_suspends", [True, False], ids=["suspends", "holds-the-loop"])
async def test_sends_that_came_in_during_a_commit_keep_the_window(
    writer: Writer, monkeypatch: pytest.MonkeyPatch, commit_suspends: bool
) -> None:
    groups = window(writer, monkeypatch, 0.6, most=1.0)
    commit = writer._commit
    during: list[asyncio.Future[None]] = []

    async def with_callers_arriving(batch: Any) -> None:
        if not during:
            # More callers than the group: two send while it commits.
            during.append(asyncio.ensure_future(burst(writer, "x", 2)))
            if commit_suspends:
                await asyncio.sleep(0)
        await commit(batch)

    monkeypatch.setattr(writer, "_commit", with_callers_arriving)
    await burst(writer, "a", 8)
    six = asyncio.ensure_future(burst(writer, "c", 6))
    # The two and the six make up the last group's number, but the last
    # group was not everyone, so the window stays open for more.
    await asyncio.sleep(2 * QUIET_S)
    assert not six.done() and not during[0].done()
    await six
    await during[0]
    assert await groups.last(writes=16) == 8
