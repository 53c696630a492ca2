"""A group's put-off rows: messages, their status history, and the events.

On PostgreSQL the event log's statement inserts the group's put-off messages
and history rows too, so a lone send is one round trip for the three and a
group holds the write turn that much less. SQLite writes each kind with a
statement of its own. Both must store the same rows.
"""

from __future__ import annotations

import asyncio
from typing import Any

from server.domain.models import OutboundDraft
from server.domain.status import DeliveryStatus
from server.storage import direct
from server.storage.store import SqlStore

TENANT = "t1"
KINDS = ("messages", "status_history", "events")


def _draft(i: int) -> OutboundDraft:
    # Every other one leaves the optional columns empty (NULL in the row).
    full = i % 2 == 0
    return OutboundDraft(
        channel_id="sms",
        destination=f"+44791112340{i}",
        type="text",
        text=f"Parcel {i}",
        content={"type": "text", "text": f"Parcel {i}", "meta": {"n": i, "tags": ["a", "b"]}},
        conversation_id=f"c0ffee00-0000-0000-0000-00000000000{i}",
        correlation_id=f"order-{i}" if full else "",
        expire_at=4_000_000_000_000 + i if full else None,
        notify_url="https://app.example/receipts" if full else "",
        callback_data="cb" if full else "",
        requested_receipts=("DELIVERED", "FAILED") if full else (),
    )


class _Inserts:
    """The statements that insert into messages, status_history or events, and what each names."""

    def __init__(self) -> None:
        self.seen: list[set[str]] = []

    def __call__(self, statement: str, _params: Any) -> None:
        kinds = {k for k in KINDS if f"INSERT INTO {k} " in statement}
        if kinds:
            self.seen.append(kinds)

    def __enter__(self) -> _Inserts:
        direct.watchers.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        direct.watchers.remove(self)


async def test_a_groups_messages_history_and_events_are_stored_alike_on_both_engines(
    db_url: str,
) -> None:
    postgres = db_url.startswith("postgresql")
    store = await SqlStore.open(db_url, lambda _events: None)
    try:
        drafts = [_draft(i) for i in range(4)]
        with _Inserts() as sends:
            # Queued together, so one group holds them all.
            results = await asyncio.gather(
                *(store.messages.accept(TENANT, [d], None, lambda _m: b"") for d in drafts)
            )
        ids = [r.messages[0].id for r in results]
        if postgres:
            assert sends.seen == [set(KINDS)]
        else:
            assert sends.seen == [{"messages"}, {"status_history"}, {"events"}]

        for d, message_id in zip(drafts, ids, strict=True):
            m = await store.messages.get_message(TENANT, message_id)
            assert (m.destination, m.text, m.correlation_id) == (
                d.destination,
                d.text,
                d.correlation_id,
            )
            assert dict(m.content) == dict(d.content)
            assert m.expire_at == d.expire_at
            assert [h.status for h in m.history] == [DeliveryStatus.ACCEPTED]
            assert m.history[0].timestamp == m.created_at
        stored = await store.events.events_after(TENANT, 0, 100)
        assert [e.event.message_id for e in stored] == ids
        assert [e.event.conversation_id for e in stored] == [d.conversation_id for d in drafts]
        assert all(e.sequence == 1 for e in stored)

        with _Inserts() as cancels:
            cancelled = await store.messages.cancel_messages(TENANT, ids[:2], "changed my mind")
        assert [r.status for r in cancelled] == [DeliveryStatus.CANCELLED] * 2
        if postgres:
            assert cancels.seen == [{"status_history", "events"}]
        else:
            assert cancels.seen == [{"status_history"}, {"events"}]
        for message_id in ids[:2]:
            m = await store.messages.get_message(TENANT, message_id)
            assert [(h.status, h.reason) for h in m.history] == [
                (DeliveryStatus.ACCEPTED, ""),
                (DeliveryStatus.CANCELLED, "changed my mind"),
            ]
        after = await store.events.events_after(TENANT, stored[-1].cursor, 100)
        assert [(e.event.message_id, e.sequence) for e in after] == [(i, 2) for i in ids[:2]]
    finally:
        await store.close()
