"""What every provider adapter shares: the contract, errors and HTTP plumbing."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

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
from server.net.http import OutboundError, OutboundHttp, blocked_address, client_tracing

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
    "HttpProviderClient",
    "InboundMessage",
    "PermanentProviderError",
    "ProviderError",
    "ProviderStatus",
    "Receipt",
    "ReceiptSink",
    "RetryableProviderError",
    "StatusQuery",
    "raise_for_status",
    "retry_after_seconds",
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


class HttpProviderClient:
    """One pooled session per adapter, with timeouts, and the common error mapping.

    Timeouts and connection failures, 5xx and 429 are retryable (429 carries
    Retry-After); any other non-2xx is permanent unless the adapter maps it first.
    """

    def __init__(
        self,
        base_url: str,
        *,
        total_timeout: float = 10.0,
        connect_timeout: float = 3.0,
        guard: OutboundHttp | None = None,
    ) -> None:
        """With a guard (tenant channels), base_url must pass the guard's policy, and
        every connection goes to an address its resolver vetted at connect time."""
        self.base_url = base_url.rstrip("/")
        self._guard = guard
        if guard is not None:
            try:
                guard.check(self.base_url)
            except OutboundError as exc:
                raise ValueError(f"base_url: {exc.reason}") from exc
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._guard is None:
                connector = aiohttp.TCPConnector(limit=100)
            else:
                connector = aiohttp.TCPConnector(
                    limit=100,
                    resolver=self._guard.vetted_resolver(),
                    # Each new connection resolves and vets afresh, so DNS cannot rebind.
                    use_dns_cache=False,
                )
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=connector,
                trust_env=False,
                trace_configs=[client_tracing()],
            )
        return self._session

    async def request(
        self, method: str, path: str, *, expect_json: bool = True, **kwargs: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        """Returns (status, parsed body or text, headers); network trouble is retryable,
        an address the guard refuses is not."""
        if self._guard is not None:
            try:
                # An IP literal never reaches the resolver, so it is judged here.
                self._guard.check(self.base_url + path)
            except OutboundError as exc:
                raise PermanentProviderError(exc.reason, "BLOCKED_ADDRESS") from exc
        try:
            async with self.session().request(
                method, self.base_url + path, allow_redirects=False, **kwargs
            ) as resp:
                raw = await resp.read()
                body: Any = raw.decode(errors="replace")
                if expect_json and raw:
                    with contextlib.suppress(ValueError):
                        body = await resp.json(content_type=None)
                return resp.status, body, dict(resp.headers)
        except TimeoutError as exc:
            raise RetryableProviderError("provider timed out", "TIMEOUT") from exc
        except aiohttp.ClientError as exc:
            blocked = blocked_address(exc)
            if blocked is not None:
                raise PermanentProviderError(str(blocked), "BLOCKED_ADDRESS") from exc
            raise RetryableProviderError(
                f"provider unreachable: {type(exc).__name__}", "NETWORK"
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def raise_for_status(status: int, headers: Mapping[str, str], code: str, reason: str) -> None:
    """The common mapping, for statuses an adapter did not handle itself."""
    if 200 <= status < 300:
        return
    if status == 429:
        raise RetryableProviderError(
            reason or "throttled", code or "429", retry_after_seconds(headers)
        )
    if status >= 500:
        raise RetryableProviderError(reason or f"provider error {status}", code or str(status))
    raise PermanentProviderError(reason or f"rejected with {status}", code or str(status))
