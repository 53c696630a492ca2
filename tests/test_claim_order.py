"""What a dispatch claim takes, and what it reads to find it.

A claim takes due work highest priority first, then oldest due time, and never
a message scheduled for later. Finding it must not cost more as sends
scheduled for later pile up: a large batch for tomorrow sits in the same index
the dispatcher reads several times a second.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from server.domain.models import OutboundDraft
from server.storage import direct
from server.storage.store import SqlStore

NOW = 1_800_000_000_000
LEASE = 60_000
DAY = 86_400_000


def _draft(n: int, priority: int, due_at: int, channel: str = "sandbox") -> OutboundDraft:
    return OutboundDraft(
        channel_id=channel,
        destination=f"+4477009{n:05d}",
        type="text",
        text=f"m{n}",
        content={"text": {"body": f"m{n}"}},
        conversation_id=f"c0ffee00-0000-0000-0000-{n:012d}",
        priority=priority,
        due_at=due_at,
    )


async def _accept(store: SqlStore, drafts: list[OutboundDraft]) -> list[str]:
    made = await store.messages.accept("t1", drafts, None, lambda _m: b"")
    return [m.id for m in made.messages]


@pytest.mark.parametrize("channels", [None, ["sandbox", "sms"]], ids=["any", "listed"])
async def test_a_claim_takes_due_work_by_priority_then_due_time_and_nothing_scheduled(
    db_url: str, channels: list[str] | None
) -> None:
    clock = [NOW]
    store = await SqlStore.open(db_url, lambda _events: None, clock=lambda: clock[0])
    try:
        later = await _accept(store, [_draft(n, 3, NOW + DAY) for n in range(4)])
        # (priority, when it was accepted and so became due), out of order.
        due = [(1, 40), (2, 45), (3, 49), (2, 20), (1, 0), (3, 30), (2, 50)]
        ids = []
        for i, (priority, at) in enumerate(due):
            clock[0] = NOW + at
            ids += await _accept(store, [_draft(10 + i, priority, 0)])
        clock[0] = NOW + 100
        order = [ids[i] for i in sorted(range(len(due)), key=lambda i: (-due[i][0], due[i][1]))]

        first = await store.outbox.claim_due(4, LEASE, channels=channels)
        # The limit cuts across priorities: both 3s, then the two oldest 2s.
        assert [d.message_id for d in first] == order[:4]
        rest = await store.outbox.claim_due(10, LEASE, channels=channels)
        assert [d.message_id for d in rest] == order[4:]
        assert await store.outbox.claim_due(10, LEASE, channels=channels) == []
        assert not set(later) & {d.message_id for d in first + rest}
    finally:
        await store.close()


def _vm_steps(db: Path, statements: list[tuple[str, Any]]) -> int:
    """SQLite virtual machine instructions to run the statements, a measure of
    rows and index entries visited that does not depend on the machine."""
    conn = sqlite3.connect(db)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        for statement, params in statements:
            conn.execute(statement, params).fetchall()
    finally:
        conn.close()
    return steps


async def test_finding_due_work_reads_no_more_as_sends_for_later_pile_up(tmp_path: Path) -> None:
    db = tmp_path / "claims.db"
    store = await SqlStore.open(f"sqlite+aiosqlite:///{db}", lambda _e: None, clock=lambda: NOW)
    try:
        await _accept(store, [_draft(n, 2, NOW + DAY + n) for n in range(50)])
        await _accept(store, [_draft(100 + n, 2, 0) for n in range(3)])
        run: list[tuple[str, Any]] = []

        def watch(statement: str, params: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                run.append((statement, params))

        direct.watchers.append(watch)
        try:
            # Fewer due than asked for: the search goes on past the due ones.
            claimed = await store.outbox.claim_due(20, LEASE, channels=["sandbox"])
        finally:
            direct.watchers.remove(watch)
        assert len(claimed) == 3
        assert run, "the claim's reads did not run on the direct path"
        before = _vm_steps(db, run)

        await _accept(store, [_draft(1000 + n, 2, NOW + DAY + n) for n in range(3000)])
        after = _vm_steps(db, run)
        # The same reads, with sixty times as many messages waiting for tomorrow.
        assert after <= before * 1.5, (before, after)
    finally:
        await store.close()
