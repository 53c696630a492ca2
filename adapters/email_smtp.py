"""Email through an SMTP relay: a company mail server or an ESP's SMTP endpoint.

One delivery is one MIME message: the destination in To, content.cc in Cc and
content.bcc only in the envelope. A relay sends no receipts back over SMTP
(bounces come later, as mail to the sender), so the relay taking the message is
the last thing this adapter reports. Open and click tracking
(options.trackOpens/trackClicks) need an ESP's own API and are ignored here.

The MIME message is put together by ``email_mime`` and the sessions with the
relay are kept by ``smtp_relay``; this module holds the settings and the adapter.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import errors as email_errors
from email.headerregistry import Address
from urllib.parse import urlsplit, urlunsplit

import aiosmtplib

from adapters.base import (
    Accepted,
    AdapterContext,
    Delivery,
    PermanentProviderError,
    ProviderError,
    ReceiptSink,
    RetryableProviderError,
)
from adapters.email_mime import (
    SMTP_POLICY,
    attachment_name,
    attachment_type,
    message_id_domain,
    message_skeleton,
    parse_address,
    unique_addresses,
)
from adapters.settings import ChannelSettings, Secret, SettingError
from adapters.smtp_relay import SessionPool, reset_session, smtp_failure, vetted_socket
from server.domain.content import Attachment
from server.domain.models import Channel
from server.net.http import OutboundError, RefusedUrl

__all__ = ["SmtpEmailAdapter", "SmtpSettings"]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_SECURITY_PORTS = {"tls": 465, "starttls": 587, "none": 25}
_HTTP_STATUS = re.compile(r"^HTTP (\d{3})\b")


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The channel's settings, checked once at construction so mistakes show at startup."""

    host: str
    port: int
    security: str  # starttls, tls (implicit TLS) or none
    username: str | None
    password: Secret | None
    timeout_seconds: float  # for connecting and for each reply
    max_attachment_bytes: int  # all attachments of one message together
    max_connections: int
    tls_context: ssl.SSLContext | None

    @classmethod
    def from_channel(
        cls, channel: Channel, env: Mapping[str, str], *, tenant_owned: bool = False
    ) -> SmtpSettings:
        s = ChannelSettings(channel, env, tenant_owned=tenant_owned)
        ca_file = s.server_path("ca_file")
        security = s.one_of("security", ("starttls", "tls", "none"), "starttls")
        username = s.text("username", "") or None
        if username is not None and security == "none":
            raise SettingError(
                channel.channel_id,
                "username",
                "with security = none would send the password in clear",
            )
        tls_context = None
        if security != "none":
            tls_context = ssl.create_default_context(cafile=ca_file or None)
            if not s.flag("validate_certs", True):
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        return cls(
            host=s.text("host"),
            port=s.integer("port", _SECURITY_PORTS[security], maximum=65535),
            security=security,
            username=username,
            password=s.secret("password") if username else None,
            timeout_seconds=s.seconds("timeout_seconds", 10.0),
            max_attachment_bytes=s.integer("max_attachment_bytes", 10 * _MIB),
            max_connections=s.integer("max_connections", 4),
            tls_context=tls_context,
        )


@dataclass(frozen=True, slots=True)
class _Outgoing:
    message_id: str
    sender: str
    destination: str
    copies: tuple[str, ...]  # Cc and Bcc: envelope recipients besides the destination
    data: bytes
    utf8: bool  # an address is not ASCII, so the relay must offer SMTPUTF8


@dataclass(frozen=True, slots=True)
class _Fetched:
    name: str
    mime_type: str
    data: bytes


class SmtpEmailAdapter:
    def __init__(
        self, channel: Channel, ctx: AdapterContext, *, tenant_owned: bool = False
    ) -> None:
        self._channel = channel
        self._ctx = ctx
        self._settings = SmtpSettings.from_channel(channel, ctx.env, tenant_owned=tenant_owned)
        self._pool = SessionPool(self._settings.max_connections)
        # A tenant's relay is reached only at addresses the outbound policy allows.
        self._resolver = ctx.fetcher.vetted_resolver() if tenant_owned else None
        if tenant_owned:
            try:
                ctx.fetcher.check(_host_url(self._settings.host))
            except OutboundError as exc:
                raise SettingError(channel.channel_id, "host", exc.reason) from exc

    def __repr__(self) -> str:
        s = self._settings
        return f"SmtpEmailAdapter({self._channel.channel_id!r}, {s.host}:{s.port}, {s.security})"

    async def start(self, receipts: ReceiptSink) -> None:
        return None  # nothing reports back over SMTP

    async def send(self, delivery: Delivery) -> Accepted:
        outgoing = await self._compose(delivery)
        await self._relay(outgoing)
        return Accepted(outgoing.message_id, provider=self._channel.provider)

    async def close(self) -> None:
        await self._pool.close()

    # -- building the message ------------------------------------------------

    async def _compose(self, delivery: Delivery) -> _Outgoing:
        content = delivery.content
        try:
            sender = parse_address(content.sender or self._channel.lane, "from")
            if content.options.from_name:
                sender = Address(content.options.from_name, addr_spec=sender.addr_spec)
            to = parse_address(delivery.destination, "destination")
            cc = [parse_address(a, "cc") for a in content.cc]
            bcc = [parse_address(a, "bcc") for a in content.bcc]
            # Not make_msgid(): the same id on every attempt, so when a relay took
            # the message but its reply was lost, receivers can fold the retry away.
            message_id = f"<{delivery.message_id}@{message_id_domain(sender, self._settings.host)}>"
            message = message_skeleton(content, sender, to, cc, message_id)
        except (ValueError, TypeError, email_errors.HeaderParseError) as exc:
            raise PermanentProviderError(
                f"cannot build the email: {exc}", "INVALID_CONTENT"
            ) from exc
        # Downloads come after the cheap checks, and before a relay session is taken.
        for item in await self._fetch_attachments(content.attachments):
            maintype, subtype = item.mime_type.split("/", 1)
            message.add_attachment(item.data, maintype, subtype, filename=item.name)

        reply_to = list(message["Reply-To"].addresses) if "Reply-To" in message else []
        utf8 = not all(a.addr_spec.isascii() for a in [sender, to, *cc, *bcc, *reply_to])
        try:
            data = message.as_bytes(policy=SMTP_POLICY.clone(utf8=True) if utf8 else SMTP_POLICY)
        except (ValueError, TypeError, email_errors.MessageError) as exc:
            raise PermanentProviderError(
                f"cannot build the email: {exc}", "INVALID_CONTENT"
            ) from exc
        copies = unique_addresses((a.addr_spec for a in [*cc, *bcc]), exclude=to.addr_spec)
        return _Outgoing(message_id, sender.addr_spec, to.addr_spec, copies, data, utf8)

    async def _fetch_attachments(self, items: Sequence[Attachment]) -> list[_Fetched]:
        budget = self._settings.max_attachment_bytes
        declared = sum(item.size for item in items)
        if declared > budget:
            raise PermanentProviderError(
                f"attachments declare {declared} bytes; the limit is {budget}", "ATTACHMENT"
            )
        fetched: list[_Fetched] = []
        for index, item in enumerate(items, start=1):
            if not item.url:
                raise PermanentProviderError(f"attachment {index} has no mediaUrl", "ATTACHMENT")
            url = item.url
            try:
                # The fetcher enforces the remaining budget while it reads.
                data, served_type = await self._ctx.fetcher.fetch(url, budget)
            except OutboundError as exc:
                raise _fetch_failure(index, url, exc) from exc
            budget -= len(data)
            name = attachment_name(item.name, index)
            fetched.append(_Fetched(name, attachment_type(item.mime_type, served_type), data))
        return fetched

    # -- talking to the relay -------------------------------------------------

    async def _relay(self, outgoing: _Outgoing) -> None:
        async with self._pool.slots:
            smtp = await self._pool.take_idle()
            if smtp is None:
                try:
                    smtp = await self._open_session()
                except (aiosmtplib.SMTPException, OSError) as exc:
                    raise smtp_failure(exc, setup=True) from exc
            reusable = False
            try:
                await self._transact(smtp, outgoing)
                reusable = True
            except aiosmtplib.SMTPResponseException as exc:
                # The session survives a refusal once the envelope is reset.
                reusable = await reset_session(smtp)
                raise smtp_failure(exc, setup=False) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise smtp_failure(exc, setup=False) from exc
            finally:
                self._pool.put(smtp, reusable)

    async def _open_session(self) -> aiosmtplib.SMTP:
        s = self._settings
        sock = None
        if self._resolver is not None:
            async with asyncio.timeout(s.timeout_seconds):
                sock = await vetted_socket(self._resolver, s.host, s.port)
        smtp = aiosmtplib.SMTP(
            # With a socket, the host name still names the server for TLS checks.
            hostname=s.host,
            port=s.port if sock is None else None,
            sock=sock,
            timeout=s.timeout_seconds,
            use_tls=s.security == "tls",
            # Explicit: starttls refuses a relay that does not offer it, none never upgrades.
            start_tls=s.security == "starttls",
            tls_context=s.tls_context,
        )
        try:
            await smtp.connect()
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        try:
            if s.username is not None and s.password is not None:
                # Given to login only, so the client object never holds the password.
                await smtp.login(s.username, s.password.reveal())
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _transact(self, smtp: aiosmtplib.SMTP, out: _Outgoing) -> None:
        encoding, options = "ascii", []
        if out.utf8:
            if not smtp.supports_extension("smtputf8"):
                raise PermanentProviderError(
                    "an address is not ASCII and the relay does not offer SMTPUTF8", "SMTPUTF8"
                )
            encoding = "utf-8"
            options.append("SMTPUTF8")
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(out.data)}")
        await smtp.mail(out.sender, options=options, encoding=encoding)
        # The destination decides the outcome; nothing is sent before DATA, so a
        # refusal here leaves no copy behind to be duplicated by a retry.
        await smtp.rcpt(out.destination, encoding=encoding)
        refused: list[int] = []
        for copy in out.copies:
            try:
                await smtp.rcpt(copy, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused.append(exc.code)  # Cc/Bcc are best effort
        await smtp.data(out.data)
        if refused:
            log.warning(
                "channel %s: %s: %d of %d copy recipients refused (codes %s)",
                self._channel.channel_id,
                out.message_id,
                len(refused),
                len(out.copies),
                ",".join(map(str, refused)),
            )


def _host_url(host: str) -> str:
    bare = host.strip("[]")
    return f"https://[{bare}]/" if ":" in bare else f"https://{bare}/"


def _fetch_failure(index: int, url: str, exc: OutboundError) -> ProviderError:
    """Whether fetching an attachment again could work.

    Nothing has reached the relay yet, so a retry cannot duplicate mail. Network
    trouble (the fetcher chains the client's exception) and a 5xx or 429 from the
    media host are worth the bounded retries; a 4xx, a redirect, an oversize body,
    a malformed URL or a refused address would fail the same way again.
    """
    # Query strings of presigned URLs are credentials of a kind; keep them out.
    reason = f"attachment {index} could not be fetched: {exc.reason.replace(url, _no_query(url))}"
    if isinstance(exc, RefusedUrl):
        return PermanentProviderError(reason, "URL_REFUSED")
    cause = exc.__cause__
    match = _HTTP_STATUS.match(exc.reason)
    status = int(match.group(1)) if match else 0
    if (cause is not None and not isinstance(cause, ValueError)) or status >= 500 or status == 429:
        return RetryableProviderError(reason, "ATTACHMENT")
    return PermanentProviderError(reason, "ATTACHMENT")


def _no_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
