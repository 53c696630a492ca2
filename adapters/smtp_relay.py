"""Sessions with the SMTP relay: a small pool, a vetted connection, failures mapped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time

import aiosmtplib
from aiohttp.abc import AbstractResolver

from adapters.base import PermanentProviderError, ProviderError, RetryableProviderError
from server.net.http import blocked_address

# A pooled session idle longer than this is dropped rather than probed: relays
# commonly hang up on quiet clients after a minute or so.
_IDLE_SECONDS = 30.0
# 5xx replies about the session rather than the message (authentication
# required or refused, encryption required): the channel's configuration is
# wrong, and fixing it lets a later attempt of the same message succeed.
_SESSION_CODES = frozenset({530, 534, 535, 538})


class SessionPool:
    """A few open, authenticated sessions, so most sends skip connect, TLS and AUTH.

    At most `size` sessions exist at once: relays limit concurrent connections
    per client, some to as few as three.
    """

    def __init__(self, size: int) -> None:
        self.slots = asyncio.Semaphore(size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._closed = False

    async def take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and time.monotonic() - since < _IDLE_SECONDS:
                try:
                    # The relay may have hung up meanwhile; better NOOP finds out than MAIL.
                    await smtp.noop()
                    return smtp
                except (aiosmtplib.SMTPException, OSError):
                    pass
            smtp.close()
        return None

    def put(self, smtp: aiosmtplib.SMTP, reusable: bool) -> None:
        now = time.monotonic()
        # The least recently used sit at the bottom; let them go once stale.
        while self._idle and now - self._idle[0][1] >= _IDLE_SECONDS:
            self._idle.pop(0)[0].close()
        if reusable and smtp.is_connected and not self._closed:
            self._idle.append((smtp, now))
        else:
            smtp.close()

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit(timeout=1.0)
            smtp.close()


async def reset_session(smtp: aiosmtplib.SMTP) -> bool:
    if not smtp.is_connected:
        return False
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


def smtp_failure(exc: BaseException, *, setup: bool) -> ProviderError:
    """Map an SMTP failure; setup is connect, STARTTLS and AUTH, before any envelope."""
    blocked = blocked_address(exc)
    if blocked is not None:
        return PermanentProviderError(str(blocked), "BLOCKED_ADDRESS")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = exc.code
        reason = f"SMTP {code} {exc.message}".strip()[:300]
        # During setup the reply is about the relay or our credentials, not this message.
        if 500 <= code < 600 and not setup and code not in _SESSION_CODES:
            return PermanentProviderError(reason, str(code))
        return RetryableProviderError(reason, str(code))
    if isinstance(exc, TimeoutError):  # aiosmtplib's timeout errors subclass it
        return RetryableProviderError("the SMTP relay did not answer in time", "TIMEOUT")
    tls = _tls_error(exc)
    if tls is not None:
        return RetryableProviderError(f"TLS with the SMTP relay failed: {tls}", "TLS")
    if isinstance(exc, OSError):  # refused, reset, disconnected (SMTPConnectError too)
        return RetryableProviderError(f"SMTP relay unreachable: {exc}", "NETWORK")
    # e.g. STARTTLS or AUTH not offered: the relay or the channel needs fixing.
    return RetryableProviderError(f"SMTP session failed: {exc}", "SMTP")


async def vetted_socket(resolver: AbstractResolver, host: str, port: int) -> socket.socket:
    """A socket connected to an address of host that the resolver vetted.

    The connection goes to the address that was checked, so the name cannot be
    re-resolved in between to somewhere internal.
    """
    answers = await resolver.resolve(host, port, socket.AF_UNSPEC)
    loop = asyncio.get_running_loop()
    failure = OSError(f"no address for {host}")
    for answer in answers:
        sock = socket.socket(answer["family"], socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (answer["host"], answer["port"]))
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:  # cancelled, or out of time
            sock.close()
            raise
        return sock
    raise failure


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
