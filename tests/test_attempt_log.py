"""The attempt log numbers each message's entries on from its last, in the order given."""

from __future__ import annotations

from server.domain.models import AttemptEntry
from server.domain.provider import AttemptRecord
from server.storage import attempts as attempt_log
from server.storage import direct, migrate
from server.storage.db import make_engine
from server.storage.tx import Tx
from server.storage.writer import Writer

NOW = 1_800_000_000_000


def _entry(n: int, outcome: str = "ACCEPTED") -> AttemptRecord:
    return AttemptRecord(
        channel_id=f"ch-{n}",
        provider="twilio",
        outcome=outcome,
        provider_message_id=f"SM{n}" if outcome == "ACCEPTED" else "",
        error_code="" if outcome == "ACCEPTED" else "30003",
        reason="" if outcome == "ACCEPTED" else f"unreachable {n}",
        segments=n,
        latency_ms=None if n == 2 else 10 * n,
    )


def _logged(number: int, e: AttemptRecord) -> AttemptEntry:
    return AttemptEntry(
        number,
        e.channel_id,
        e.provider,
        e.outcome,
        e.provider_message_id,
        e.error_code,
        e.reason,
        e.segments,
        NOW,
        e.latency_ms or 0,
    )


async def test_entries_of_many_messages_are_numbered_on_from_each_ones_last(db_url: str) -> None:
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    writer = Writer(engine, lambda _events: None, clock=lambda: NOW)
    writer.start()
    given = [_entry(n, "FAILED" if n % 3 == 0 else "ACCEPTED") for n in range(1, 7)]
    ran: list[str] = []
    try:
        await writer.submit(lambda tx: attempt_log.record(tx, "m1", given[:2]))

        async def many(tx: Tx) -> None:
            await attempt_log.record_many(
                tx,
                [("m1", [given[2], given[3]]), ("m2", [given[4]]), ("m3", []), ("m1", [given[5]])],
            )

        direct.watchers.append(lambda statement, _params: ran.append(statement))
        try:
            await writer.submit(many)
        finally:
            direct.watchers.clear()
        async with engine.connect() as conn:
            logs = {m: await attempt_log.log_of(conn, m) for m in ("m1", "m2", "m3")}
    finally:
        await writer.close()
        await engine.dispose()

    assert logs == {
        "m1": tuple(_logged(i + 1, e) for i, e in enumerate([*given[:4], given[5]])),
        "m2": (_logged(1, given[4]),),
        "m3": (),
    }
    touching = [s for s in ran if "attempts" in s]
    # PostgreSQL numbers them in the insert itself; SQLite reads the last numbers first.
    assert len(touching) == (2 if "sqlite" in db_url else 1), touching
