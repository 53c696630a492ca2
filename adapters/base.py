"""The contract every provider adapter fulfils, re-exported for adapter authors."""

from __future__ import annotations

from server.domain.models import Delivery, Receipt
from server.domain.provider import (
    Accepted,
    ChannelAdapter,
    PermanentProviderError,
    ProviderError,
    ReceiptSink,
    RetryableProviderError,
)

__all__ = [
    "Accepted",
    "ChannelAdapter",
    "Delivery",
    "PermanentProviderError",
    "ProviderError",
    "Receipt",
    "ReceiptSink",
    "RetryableProviderError",
]
