"""The receipt sweep: a message whose receipt never came is asked about, then given up.

Every accepted message must reach a final status. A provider that took a
message and never reported on it (a callback lost on its side or refused on
ours past its retries) would leave it SUBMITTED forever. Past the receipt
timeout the sweep asks the provider, where the channel's adapter can be
asked (StatusQuery): a final answer is recorded as a receipt, "still on its
way" is asked again later, up to a number of answers and a hard ceiling;
failed questions leave the message for the next round. Channels that cannot
be asked move the message to EXPIRED straight away, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Protocol

from server.aio import IDLE, LoopWorker, WorkerLoop
from server.channels import ChannelRegistry
from server.dispatch.receipts import ReceiptStore, record_receipt
from server.domain.models import Receipt
from server.domain.provider import StatusQuery
from server.domain.status import TERMINAL
from server.storage.faults import is_unavailable
from server.storage.receipt_timeouts import ReceiptRules, Taken, Unconfirmed

log = logging.getLogger(__name__)

# Questions to providers in flight at once, over all channels.
MAX_QUESTIONS = 8
ROUND_LIMIT = 200


class UnconfirmedSends(ReceiptStore, Protocol):
    """Messages whose receipt is overdue, taken under a lease, and the provider's answers."""

    async def take_unconfirmed(
        self, rules: ReceiptRules, askable: Collection[str], limit: int
    ) -> Taken: ...

    async def still_on_its_way(self, message_id: str, said: str, rules: ReceiptRules) -> bool: ...


class ReceiptTimeoutSweeper(LoopWorker):
    def __init__(
        self,
        store: UnconfirmedSends,
        channels: ChannelRegistry,
        rules: ReceiptRules,
        *,
        interval: float,
    ) -> None:
        self._store = store
        self._channels = channels
        self._rules = rules
        self._questions = asyncio.Semaphore(MAX_QUESTIONS)
        self._loop = WorkerLoop(
            "receipt-sweeper",
            self._round,
            interval=interval,
            idle_first=True,
            expected=is_unavailable,
            what="receipt timeout sweep",
            logger=log,
        )

    async def sweep(self) -> int:
        """One round; returns how many messages reached a final status in it."""
        askable = {
            entry.channel.channel_id
            for entry in self._channels.entries()
            if isinstance(entry.adapter, StatusQuery)
        }
        settled = 0
        while True:
            taken = await self._store.take_unconfirmed(self._rules, askable, ROUND_LIMIT)
            settled += taken.expired
            answers = await asyncio.gather(*(self._ask(u) for u in taken.to_ask))
            settled += sum(answers)
            if taken.seen < ROUND_LIMIT:
                return settled

    async def _ask(self, message: Unconfirmed) -> bool:
        """Ask the provider once; True when the message reached a final status."""
        adapter = self._channels.adapter(message.channel_id)
        if not isinstance(adapter, StatusQuery):
            return False  # the channel changed since; the next round sees it as it is now
        try:
            async with self._questions:
                answer = await adapter.query_status(message.provider_message_id)
            if answer.status is not None and answer.status in TERMINAL:
                said = f"from a status query: the provider says {answer.said!r}"
                reason = f"{said} ({answer.reason})" if answer.reason else said
                receipt = Receipt(message.provider_message_id, answer.status, reason)
                applied = await record_receipt(self._store, message.channel_id, receipt)
                return applied.moved
            return await self._store.still_on_its_way(message.message_id, answer.said, self._rules)
        except Exception as exc:  # the provider or the store: asked again next interval
            log.warning(
                "status query for %s on %s failed, asking again later: %r",
                message.message_id,
                message.channel_id,
                exc,
            )
            return False

    async def _round(self) -> float | None:
        settled = await self.sweep()
        if settled:
            log.warning("%d messages past the receipt timeout reached a final status", settled)
        return IDLE
