"""Talking HTTP to a provider, and the one mapping from its answers to outcomes.

Every HTTP adapter sends through HttpProviderClient, and every answer it does
not take itself becomes an outcome here:

- a timeout or a connection failure is retryable (TIMEOUT, NETWORK); an
  address the outbound guard refuses is permanent (BLOCKED_ADDRESS);
- 429 is throttling: retryable, after Retry-After when given;
- 5xx is transient: retryable, after Retry-After when given;
- any other non-2xx is permanent.

Providers say more in their error bodies than the status does (Meta throttles
with 400 and error code 130429; Twilio reports an unsubscribed recipient as
21610), so each adapter hands the client a small ErrorReader that pulls out
the provider's code and message and, where the provider's code knows better
than the status, a Verdict.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, NamedTuple

import aiohttp

from server.domain.provider import (
    PermanentProviderError,
    ProviderError,
    RecipientOptedOut,
    RetryableProviderError,
)
from server.net.http import OutboundError, OutboundHttp, blocked_address, client_tracing

__all__ = [
    "ErrorReader",
    "HttpAnswer",
    "HttpProviderClient",
    "ProviderFault",
    "Verdict",
    "network_failure",
    "no_details",
    "provider_failure",
    "retry_after_seconds",
]


class HttpAnswer(NamedTuple):
    status: int
    body: Any  # parsed JSON when the body is JSON, else its text
    headers: Mapping[str, str]


class Verdict(Enum):
    THROTTLED = "throttled"  # retry, after the provider's delay
    TRANSIENT = "transient"  # retry
    PERMANENT = "permanent"  # the same request would fail the same way
    OPTED_OUT = "opted_out"  # permanent, and the recipient unsubscribed with the provider


@dataclass(frozen=True, slots=True)
class ProviderFault:
    """What a provider's error body says, as far as the mapping needs it."""

    code: str = ""  # the provider's error code; the HTTP status when empty
    message: str = ""
    # Set when the provider's code decides rather than the HTTP status.
    verdict: Verdict | None = None
    # A delay the body carries (Google's RetryInfo); Retry-After wins over it.
    retry_after: float | None = None


ErrorReader = Callable[[HttpAnswer], ProviderFault]


def no_details(answer: HttpAnswer) -> ProviderFault:
    """For a provider whose error bodies say nothing the status does not."""
    return ProviderFault()


def status_verdict(status: int) -> Verdict:
    if status == 429:
        return Verdict.THROTTLED
    if status >= 500:
        return Verdict.TRANSIENT
    return Verdict.PERMANENT


def provider_failure(answer: HttpAnswer, read_error: ErrorReader, provider: str) -> ProviderError:
    """The outcome of a non-2xx answer the adapter did not take itself."""
    fault = read_error(answer)
    code = fault.code or str(answer.status)
    reason = fault.message or f"{provider} answered HTTP {answer.status}"
    verdict = fault.verdict or status_verdict(answer.status)
    if verdict in (Verdict.THROTTLED, Verdict.TRANSIENT):
        delay = retry_after_seconds(answer.headers)
        return RetryableProviderError(reason, code, fault.retry_after if delay is None else delay)
    if verdict is Verdict.OPTED_OUT:
        return RecipientOptedOut(reason, code)
    return PermanentProviderError(reason, code)


def network_failure(exc: BaseException) -> ProviderError:
    """A request that got no answer: retryable, unless the guard refused the address."""
    if isinstance(exc, TimeoutError):
        return RetryableProviderError("provider timed out", "TIMEOUT")
    blocked = blocked_address(exc)
    if blocked is not None:
        return PermanentProviderError(str(blocked), "BLOCKED_ADDRESS")
    return RetryableProviderError(f"provider unreachable: {type(exc).__name__}", "NETWORK")


def retry_after_seconds(
    headers: Mapping[str, str], now: Callable[[], float] = time.time
) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP-date (RFC 9110)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())


class HttpProviderClient:
    """One pooled session per adapter, with timeouts and the common error mapping."""

    def __init__(
        self,
        base_url: str,
        *,
        provider: str = "provider",
        read_error: ErrorReader = no_details,
        total_timeout: float = 10.0,
        connect_timeout: float = 3.0,
        guard: OutboundHttp | None = None,
    ) -> None:
        """With a guard (tenant channels), base_url must pass the guard's policy, and
        every connection goes to an address its resolver vetted at connect time."""
        self.base_url = base_url.rstrip("/")
        self._provider = provider
        self._read_error = read_error
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

    async def call(
        self, method: str, path: str, *, accept: Collection[int] = (), **kwargs: Any
    ) -> HttpAnswer:
        """A 2xx answer, or one whose status is in accept (RBM's 404 means "not
        RCS-capable", which the adapter handles); anything else is raised as the
        mapped ProviderError."""
        answer = await self.request(method, path, **kwargs)
        if 200 <= answer.status < 300 or answer.status in accept:
            return answer
        raise provider_failure(answer, self._read_error, self._provider)

    async def request(
        self, method: str, path: str, *, expect_json: bool = True, **kwargs: Any
    ) -> HttpAnswer:
        """Any answer as it came; no answer at all is raised as a ProviderError."""
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
                return HttpAnswer(resp.status, body, dict(resp.headers))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise network_failure(exc) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
