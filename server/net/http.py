"""The single chokepoint for HTTP to URLs that tenants, not we, supplied.

Webhook posts and media fetches both come through here so that one place can
enforce the rules for talking to untrusted addresses (no redirects, bounded
time and size today; an SSRF guard on the resolved address later).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp


class OutboundError(Exception):
    """The request did not produce a usable HTTP response."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PostResult:
    status: int
    # Seconds the receiver asked us to wait (integer Retry-After on 429/503).
    retry_after_s: int | None = None


_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError)


class OutboundHttp:
    def __init__(
        self,
        *,
        total_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 100,
        user_agent: str = "cimhub-webhooks/1",
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=total_timeout_s, connect=connect_timeout_s)
        self._max_connections = max_connections
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession must be born inside the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                headers={"User-Agent": self._user_agent},
                # Proxy settings from the environment must not reroute tenant traffic.
                trust_env=False,
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST body and return the status; a 3xx is returned, never followed."""
        return (await self.post_result(url, body, headers)).status

    async def post_result(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as resp:
                # Drain a little so the connection can go back to the pool.
                await resp.content.read(64 * 1024)
                return PostResult(resp.status, _retry_after(resp))
        except _NETWORK_ERRORS as exc:
            raise OutboundError(_describe(exc)) from exc

    async def fetch(self, url: str, max_bytes: int) -> tuple[bytes, str]:
        """GET url; return its body and content type, refusing anything over max_bytes."""
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
            raise OutboundError(_describe(exc)) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _retry_after(resp: aiohttp.ClientResponse) -> int | None:
    if resp.status not in (429, 503):
        return None
    value = resp.headers.get("Retry-After", "").strip()
    # The HTTP-date form is rare from webhook receivers; only seconds are honoured.
    return int(value) if value.isdigit() else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
