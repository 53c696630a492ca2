"""In-process provider adapters that behave in one fixed way each.

They stand in for a provider at the adapter boundary when a test is about the
dispatcher rather than a wire format.
"""

from __future__ import annotations

import asyncio
import uuid

from adapters.base import (
    Accepted,
    Delivery,
    PermanentProviderError,
    Receipt,
    ReceiptSink,
    RetryableProviderError,
)
from server.domain.status import DeliveryStatus


class _Recording:
    def __init__(self) -> None:
        self.attempts: list[Delivery] = []
        self.receipts: ReceiptSink | None = None

    async def start(self, receipts: ReceiptSink) -> None:
        self.receipts = receipts

    async def close(self) -> None:
        return None


class HappyProvider(_Recording):
    """Accepts everything; reports nothing until told to."""

    async def send(self, delivery: Delivery) -> Accepted:
        self.attempts.append(delivery)
        return Accepted(f"happy-{uuid.uuid4().hex}")

    async def report(self, channel_id: str, provider_id: str, status: DeliveryStatus) -> None:
        assert self.receipts is not None
        await self.receipts(channel_id, Receipt(provider_id, status))


class FlakyProvider(_Recording):
    """Fails with a retryable error the first `failures` times, then accepts."""

    def __init__(self, failures: int, retry_after: float | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.retry_after = retry_after

    async def send(self, delivery: Delivery) -> Accepted:
        self.attempts.append(delivery)
        if len(self.attempts) <= self.failures:
            raise RetryableProviderError("503 from provider", "503", retry_after=self.retry_after)
        return Accepted(f"flaky-{uuid.uuid4().hex}")


class RejectingProvider(_Recording):
    """Refuses every message permanently, with a provider error code."""

    async def send(self, delivery: Delivery) -> Accepted:
        self.attempts.append(delivery)
        raise PermanentProviderError("invalid destination number", "21211")


class BlackHoleProvider(_Recording):
    """Never answers: the adapter's own timeout is what ends the attempt."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    async def send(self, delivery: Delivery) -> Accepted:
        self.attempts.append(delivery)
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.Event().wait()
        except TimeoutError as exc:
            raise RetryableProviderError("provider timed out", "TIMEOUT") from exc
        raise AssertionError("unreachable")


class SlowProvider(_Recording):
    """Accepts everything, each request after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def send(self, delivery: Delivery) -> Accepted:
        self.attempts.append(delivery)
        await asyncio.sleep(self.delay)
        return Accepted(f"slow-{uuid.uuid4().hex}")


class HoldingProvider(_Recording):
    """Holds every request until release(), then accepts it."""

    def __init__(self) -> None:
        super().__init__()
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def send(self, delivery: Delivery) -> Accepted:
        self.attempts.append(delivery)
        await self._released.wait()
        return Accepted(f"held-{uuid.uuid4().hex}")
