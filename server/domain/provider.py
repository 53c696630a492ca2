"""What the dispatcher needs from a provider adapter, and how adapters fail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from server.domain.models import Delivery, Receipt
from server.domain.status import DeliveryStatus


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One try at a provider, kept in the message's attempt log."""

    channel_id: str
    provider: str
    outcome: str  # ACCEPTED or FAILED
    provider_message_id: str = ""
    error_code: str = ""
    reason: str = ""
    segments: int = 1
    # Measured by the dispatcher around the provider call; None when not.
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider took the message and named it.

    channel_id is set when another channel carried it (e.g. an SMS fallback for
    RCS); earlier lists failed tries made within the same attempt, so a
    fallback shows as two attempts on one message.
    """

    provider_message_id: str
    segments: int = 1
    channel_id: str = ""
    provider: str = ""
    earlier: tuple[AttemptRecord, ...] = ()
    # Set by the dispatcher, not the adapter: the whole call, fallback tries included.
    latency_ms: int | None = None


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


class RecipientOptedOut(PermanentProviderError):
    """The provider refuses because the recipient unsubscribed with it (e.g.
    Twilio 21610): the hub records the opt-out so it stops paying for refusals."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a customer sent us through a provider."""

    channel_id: str
    provider_message_id: str
    from_address: str
    to_address: str = ""
    type: str = "text"  # text, image, video, audio, document, location, contacts, button, ...
    text: str = ""
    media_url: str = ""
    mime_type: str = ""
    caption: str = ""
    latitude: float | None = None
    longitude: float | None = None
    contact_name: str = ""
    timestamp: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """An HTTP request a provider made to us, as the adapter needs to see it."""

    method: str
    url: str  # the full public URL the provider called, for signature checks
    headers: Mapping[str, str]  # lower-cased names
    query: Mapping[str, str]
    body: bytes
    form: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallbackResult:
    receipts: tuple[Receipt, ...] = ()
    inbound: tuple[InboundMessage, ...] = ()
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"


class CallbackRejected(Exception):
    """The callback failed verification; answer with status and change nothing."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


ReceiptSink = Callable[[str, Receipt], Awaitable[None]]
"""Called with (channel_id, receipt) whenever a provider reports on a message."""


class ChannelAdapter(Protocol):
    async def start(self, receipts: ReceiptSink) -> None: ...

    async def send(self, delivery: Delivery) -> Accepted: ...

    async def close(self) -> None: ...


class CallbackHandler(Protocol):
    """Adapters whose provider calls back implement this too."""

    async def handle_callback(self, request: CallbackRequest) -> CallbackResult: ...


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """What a provider answered when asked what became of a message it took."""

    # A final status, or None while the message is still on its way.
    status: DeliveryStatus | None
    # The provider's own word for the state, e.g. Twilio's "sent".
    said: str
    # The provider's error code and message, when it failed the message.
    reason: str = ""


@runtime_checkable
class StatusQuery(Protocol):
    """Adapters whose provider can be asked about one message implement this too.

    A receipt that never came is then asked for before the message is given
    up on. Raises ProviderError when the provider cannot answer now.
    """

    async def query_status(self, provider_message_id: str) -> ProviderStatus: ...
