"""A provider simulator: accepts every message, then reports it DELIVERED.

The channel setting ``receipt_status`` changes what it reports: READ, or
NONE for a provider whose receipts never come (to try deadline fallback).
It is the default channel of `make run`, so the platform can be tried end to
end without any provider account. With a sent log it also behaves like a
provider that outlives us: every accepted message is appended to the log, and
on start the receipts of everything in the log are reported again, the way a
real provider re-sends callbacks that were not acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import Accepted, Delivery, Receipt, ReceiptSink
from adapters.settings import ChannelSettings
from server.aio import cancel_and_wait, log_failure
from server.domain.models import Channel
from server.domain.status import DeliveryStatus

log = logging.getLogger(__name__)
# A receipt the hub could not record is offered again, ever later, as a
# provider re-sends callbacks that were not acknowledged.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    # The receipt it reports for every message; None for a provider whose receipts never come.
    report: DeliveryStatus | None
    # A file on the server; only the channels file may name one.
    sent_log: str | None

    @classmethod
    def parse(cls, channel: Channel, *, tenant_owned: bool = False) -> SandboxSettings:
        s = ChannelSettings(channel, {}, tenant_owned=tenant_owned)
        wanted = s.one_of("receipt_status", ("DELIVERED", "READ", "NONE"), "DELIVERED")
        return cls(
            report=None if wanted == "NONE" else DeliveryStatus(wanted),
            sent_log=s.server_path("sent_log") or None,
        )


class SandboxAdapter:
    def __init__(
        self,
        channel_id: str,
        *,
        delivery_delay: float = 0.05,
        record: bool = False,
        sent_log: str | None = None,
        report: DeliveryStatus | None = DeliveryStatus.DELIVERED,
    ) -> None:
        self.channel_id = channel_id
        self._report_status = report
        self._delay = delivery_delay
        self._record = record
        self._sent_log = sent_log
        self._log_fd: int | None = None
        self._receipts: ReceiptSink | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # Only tests ask for a record of what was sent; a long-running server must not grow.
        self.sent: list[Delivery] = []
        self.sent_count = 0

    async def start(self, receipts: ReceiptSink) -> None:
        self._receipts = receipts
        if self._sent_log:
            earlier, self._log_fd = await asyncio.to_thread(_open_log, Path(self._sent_log))
            for line in earlier:
                if line and self._report_status is not None:
                    self._spawn(self._report(line.split(" ", 1)[0]))

    async def send(self, delivery: Delivery) -> Accepted:
        provider_id = f"sbx-{uuid.uuid4().hex}"
        self.sent_count += 1
        if self._record:
            self.sent.append(delivery)
        if self._log_fd is not None:
            os.write(self._log_fd, f"{provider_id} {delivery.message_id}\n".encode())
        if self._report_status is not None:
            self._spawn(self._report(provider_id))
        return Accepted(provider_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(log_failure)

    async def _report(self, provider_id: str) -> None:
        await asyncio.sleep(self._delay)
        wait = RETRY_FIRST_S
        status = self._report_status or DeliveryStatus.DELIVERED
        while self._receipts is not None:
            try:
                await self._receipts(self.channel_id, Receipt(provider_id, status))
                return
            except Exception as exc:
                log.warning(
                    "receipt for %s not recorded (%r); offering it again in %.1f s",
                    provider_id,
                    exc,
                    wait,
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_S)

    async def close(self) -> None:
        await cancel_and_wait(*self._pending)
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None


def _open_log(path: Path) -> tuple[list[str], int]:
    earlier = path.read_text().split("\n") if path.exists() else []
    # O_APPEND writes of one short line are atomic, so the log stays whole even
    # when the process is killed mid-write.
    return earlier, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
