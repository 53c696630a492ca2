"""What the dispatcher needs from a provider adapter, and how adapters fail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from server.domain.models import Delivery, Receipt


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider took the message and named it."""

    provider_message_id: str
    segments: int = 1


class ProviderError(Exception):
    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class RetryableProviderError(ProviderError):
    """Worth another attempt: timeouts, 5xx, throttling."""

    def __init__(self, reason: str, code: str = "", retry_after: float | None = None) -> None:
        super().__init__(reason, code)
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Another attempt would fail the same way: bad number, policy, other 4xx."""


ReceiptSink = Callable[[str, Receipt], Awaitable[None]]
"""Called with (channel_id, receipt) whenever a provider reports on a message."""


class ChannelAdapter(Protocol):
    async def start(self, receipts: ReceiptSink) -> None: ...

    async def send(self, delivery: Delivery) -> Accepted: ...

    async def close(self) -> None: ...
