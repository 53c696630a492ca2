"""What every provider adapter shares: the contract, its errors and the build context.

HTTP plumbing and the mapping of provider answers live in provider_http.py,
channel settings in settings.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from server.domain.models import Delivery, Receipt
from server.domain.provider import (
    Accepted,
    AttemptRecord,
    CallbackHandler,
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    ChannelAdapter,
    InboundMessage,
    PermanentProviderError,
    ProviderError,
    ProviderStatus,
    ReceiptSink,
    RetryableProviderError,
    StatusQuery,
)
from server.net.http import OutboundHttp

__all__ = [
    "Accepted",
    "AdapterContext",
    "AttemptRecord",
    "CallbackHandler",
    "CallbackRejected",
    "CallbackRequest",
    "CallbackResult",
    "ChannelAdapter",
    "Delivery",
    "InboundMessage",
    "PermanentProviderError",
    "ProviderError",
    "ProviderStatus",
    "Receipt",
    "ReceiptSink",
    "RetryableProviderError",
    "StatusQuery",
]


@dataclass(frozen=True)
class AdapterContext:
    """What the composition root hands to adapter factories."""

    public_url: str  # where providers reach our callbacks, e.g. https://hub.example.com
    # The one guarded client for URLs we did not configure (media); its policy also
    # guards the provider connections of tenant-created channels.
    fetcher: OutboundHttp
    # Looks up another channel's adapter, for fallbacks such as RCS -> SMS.
    adapter_for: Callable[[str], ChannelAdapter | None] = field(default=lambda _channel_id: None)
    # Holds credentials, so it never appears in a repr or a log line.
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)

    def callback_url(self, channel_id: str) -> str:
        return f"{self.public_url.rstrip('/')}/callbacks/{channel_id}"
