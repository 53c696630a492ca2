"""A group commit's sends read the consent ledger once, and still see an opt-out
written earlier in the same group.

Every send is screened against the ledger inside the transaction that stores
it. On PostgreSQL each read is a round trip made while holding the write turn,
so the group's first send reads the entries of all the group's sends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from server.domain.consent import ConsentChange, ConsentSource, ConsentState
from server.domain.models import OutboundDraft
from server.domain.status import DeliveryStatus
from server.storage import direct
from server.storage.store import SqlStore

TENANT = "t1"
ADDRESSES = [f"+4479111234{n:02d}" for n in range(12)]


def _draft(address: str) -> OutboundDraft:
    return OutboundDraft(
        channel_id="sms",
        destination=address,
        type="text",
        text="Sale today",
        content={"type": "text", "text": "Sale today"},
        conversation_id=f"c0ffee00-0000-0000-0000-{address[-12:]}",
        consent_type="SMS",
    )


def _opt_out(address: str) -> ConsentChange:
    return ConsentChange(
        "SMS", address, "all", ConsentState.OPTED_OUT, ConsentSource.API, "asked by phone"
    )


def _opt_in(address: str) -> ConsentChange:
    return ConsentChange("SMS", address, "all", ConsentState.OPTED_IN, ConsentSource.API, "")


async def _send(store: SqlStore, address: str) -> str:
    accepted = await store.messages.accept(TENANT, [_draft(address)], None, lambda _m: b"")
    return accepted.messages[0].status.value


class _LedgerReads:
    """Counts the statements that read consent entries, on the driver or not."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, statement: str, _params: Any) -> None:
        if "FROM consents" in statement:
            self.count += 1

    def __enter__(self) -> _LedgerReads:
        direct.watchers.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        direct.watchers.remove(self)


async def test_a_groups_sends_read_the_ledger_once_and_each_is_screened(db_url: str) -> None:
    store = await SqlStore.open(db_url, lambda _events: None)
    try:
        await store.consents.record_consent(TENANT, _opt_out(ADDRESSES[3]))
        await store.consents.record_consent(TENANT, _opt_out(ADDRESSES[8]))
        await store.consents.record_consent(TENANT, _opt_in(ADDRESSES[5]))
        with _LedgerReads() as reads:
            # Queued together, so one group holds them all.
            statuses = await asyncio.gather(*(_send(store, a) for a in ADDRESSES))
        assert reads.count == 1
        refused = [a for a, s in zip(ADDRESSES, statuses, strict=True) if s != "ACCEPTED"]
        assert refused == [ADDRESSES[3], ADDRESSES[8]]
        assert {statuses[3], statuses[8]} == {DeliveryStatus.FAILED.value}
        # A later group reads again: an opt-out between groups is seen.
        await store.consents.record_consent(TENANT, _opt_out(ADDRESSES[0]))
        with _LedgerReads() as reads:
            assert await _send(store, ADDRESSES[0]) == DeliveryStatus.FAILED.value
        assert reads.count == 1
    finally:
        await store.close()


async def test_an_opt_out_earlier_in_the_group_stops_a_later_send_of_it(db_url: str) -> None:
    store = await SqlStore.open(db_url, lambda _events: None)
    try:
        # The first send reads the entries of all three sends; the opt-out
        # between them must not leave the third screened against that read.
        first, _applied, third, other = await asyncio.gather(
            _send(store, ADDRESSES[0]),
            store.consents.record_consent(TENANT, _opt_out(ADDRESSES[1])),
            _send(store, ADDRESSES[1]),
            _send(store, ADDRESSES[2]),
        )
        assert (first, third, other) == ("ACCEPTED", DeliveryStatus.FAILED.value, "ACCEPTED")
    finally:
        await store.close()
