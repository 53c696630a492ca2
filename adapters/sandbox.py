"""A provider simulator: accepts every message, then reports it DELIVERED.

It is the default channel of `make run`, so the platform can be tried end to
end without any provider account.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from adapters.base import Accepted, Delivery, Receipt, ReceiptSink
from server.domain.status import DeliveryStatus


class SandboxAdapter:
    def __init__(
        self, channel_id: str, *, delivery_delay: float = 0.05, record: bool = False
    ) -> None:
        self.channel_id = channel_id
        self._delay = delivery_delay
        self._record = record
        self._receipts: ReceiptSink | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # Only tests ask for a record of what was sent; a long-running server must not grow.
        self.sent: list[Delivery] = []
        self.sent_count = 0

    async def start(self, receipts: ReceiptSink) -> None:
        self._receipts = receipts

    async def send(self, delivery: Delivery) -> Accepted:
        provider_id = f"sbx-{uuid.uuid4().hex}"
        self.sent_count += 1
        if self._record:
            self.sent.append(delivery)
        task = asyncio.create_task(self._report(provider_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return Accepted(provider_id)

    async def _report(self, provider_id: str) -> None:
        await asyncio.sleep(self._delay)
        if self._receipts is not None:
            await self._receipts(self.channel_id, Receipt(provider_id, DeliveryStatus.DELIVERED))

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
