"""The single chokepoint for HTTP to URLs that tenants, not we, supplied.

Webhook posts and media fetches both come through here so that one place can
enforce the rules for talking to untrusted addresses: no redirects, bounded
time and size, and only global addresses (see addresses.py). The address is
vetted by the resolver the connection itself uses, so a name cannot resolve to
a safe address for the check and to an internal one for the connect.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.net.addresses import AddressPolicy, UnsafeUrl
from server.telemetry import tracing


class OutboundError(Exception):
    """The request did not produce a usable HTTP response."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RefusedUrl(OutboundError):
    """The guard refused the URL itself (scheme, address); no retry can change that."""


@dataclass(frozen=True, slots=True)
class PostResult:
    status: int
    # Seconds the receiver asked us to wait (integer Retry-After on 429/503).
    retry_after_s: int | None = None


_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError)


class BlockedAddress(OSError):
    """A name resolved to an address the policy refuses."""


class VettedResolver(AbstractResolver):
    """Resolves with `inner` and refuses the name if ANY of its addresses is refused."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            why = self._policy.refusal(address)
            if why is not None:
                raise BlockedAddress(f"refused {why} for host {host}")
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class OutboundHttp:
    def __init__(
        self,
        *,
        total_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 100,
        user_agent: str = "cimhub-webhooks/1",
        policy: AddressPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        # The default refuses every non-global address; the composition root
        # passes the configured allow-list and scheme rule.
        self._policy = policy or AddressPolicy()
        self._inner_resolver = resolver
        self._timeout = aiohttp.ClientTimeout(total=total_timeout_s, connect=connect_timeout_s)
        self._max_connections = max_connections
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    @property
    def policy(self) -> AddressPolicy:
        return self._policy

    def vetted_resolver(self) -> VettedResolver:
        """A resolver that refuses what this client refuses, for other clients that
        connect where tenants point them (provider APIs of tenant channels)."""
        return VettedResolver(self._policy, self._inner_resolver)

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession must be born inside the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    resolver=VettedResolver(self._policy, self._inner_resolver),
                    # Every new connection resolves and vets afresh.
                    use_dns_cache=False,
                ),
                headers={"User-Agent": self._user_agent},
                # Proxy settings from the environment must not reroute tenant traffic.
                trust_env=False,
                trace_configs=[client_tracing()],
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST body and return the status; a 3xx is returned, never followed."""
        return (await self.post_result(url, body, headers)).status

    def check(self, url: str) -> None:
        """Raise OutboundError when url may not be fetched, before any connection."""
        try:
            self._policy.check_url(url)
        except UnsafeUrl as exc:
            raise RefusedUrl(str(exc)) from exc

    async def post_result(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        self.check(url)
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as resp:
                # Drain a little so the connection can go back to the pool.
                await resp.content.read(64 * 1024)
                return PostResult(resp.status, _retry_after(resp))
        except _NETWORK_ERRORS as exc:
            raise _failure(exc) from exc

    async def fetch(self, url: str, max_bytes: int) -> tuple[bytes, str]:
        """GET url; return its body and content type, refusing anything over max_bytes."""
        self.check(url)
        try:
            async with self._client().get(url, allow_redirects=False) as resp:
                if not 200 <= resp.status < 300:
                    raise OutboundError(f"HTTP {resp.status} from {url}")
                declared = resp.content_length
                if declared is not None and declared > max_bytes:
                    raise OutboundError(f"response of {declared} bytes exceeds {max_bytes}")
                chunks: list[bytes] = []
                size = 0
                # Count as we read: Content-Length may be absent or untrue.
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise OutboundError(f"response exceeds {max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks), resp.headers.get("Content-Type", "")
        except _NETWORK_ERRORS as exc:
            raise _failure(exc) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def client_tracing() -> aiohttp.TraceConfig:
    """Each request of a session is a client span, announced to the receiver by a
    `traceparent` header, so a provider's or a receiver's logs join the trace."""
    config = aiohttp.TraceConfig()

    async def start(
        _session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        url = params.url
        span = tracing.tracer().start_span(
            params.method,
            kind=SpanKind.CLIENT,
            # Host and path only: a query string may hold a tenant's token.
            attributes={
                "http.request.method": params.method,
                "server.address": url.host or "",
                "server.port": url.port or 0,
                "url.path": url.path,
            },
        )
        ctx.cimhub_span = span
        carrier: dict[str, str] = {}
        tracing.inject(carrier, trace.set_span_in_context(span))
        for key, value in carrier.items():
            params.headers[key] = value

    async def end(
        _session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        span = getattr(ctx, "cimhub_span", None)
        if span is None:
            return
        status = params.response.status
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_status(Status(StatusCode.ERROR, str(status)))
        span.end()

    async def failed(
        _session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        span = getattr(ctx, "cimhub_span", None)
        if span is None:
            return
        span.set_attribute("error.type", type(params.exception).__name__)
        span.set_status(Status(StatusCode.ERROR, type(params.exception).__name__))
        span.end()

    config.on_request_start.append(start)
    config.on_request_end.append(end)
    config.on_request_exception.append(failed)
    return config


def _retry_after(resp: aiohttp.ClientResponse) -> int | None:
    if resp.status not in (429, 503):
        return None
    value = resp.headers.get("Retry-After", "").strip()
    # The HTTP-date form is rare from webhook receivers; only seconds are honoured.
    return int(value) if value.isdigit() else None


def _failure(exc: BaseException) -> OutboundError:
    # A name that resolved to a refused address fails inside the connector, so
    # it arrives as a connection error; it is a refusal all the same.
    blocked = blocked_address(exc)
    if blocked is not None:
        return RefusedUrl(str(blocked))
    return OutboundError(_describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def blocked_address(exc: BaseException) -> BlockedAddress | None:
    """The guard's refusal behind a connection failure, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddress):
            return seen
        inner = getattr(seen, "os_error", None)
        if isinstance(inner, BlockedAddress):
            return inner
        seen = seen.__cause__ or seen.__context__
    return None
