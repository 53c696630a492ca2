"""Email through an SMTP relay: a company mail server or an ESP's SMTP endpoint.

One delivery is one MIME message: the destination in To, content.cc in Cc and
content.bcc only in the envelope. A relay sends no receipts back over SMTP
(bounces come later, as mail to the sender), so the relay taking the message is
the last thing this adapter reports. Open and click tracking
(options.trackOpens/trackClicks) need an ESP's own API and are ignored here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email import errors as email_errors
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiosmtplib
from aiohttp.abc import AbstractResolver

from adapters.base import (
    Accepted,
    AdapterContext,
    Delivery,
    PermanentProviderError,
    ProviderError,
    ReceiptSink,
    RetryableProviderError,
)
from adapters.settings import ChannelSettings, Secret, SettingError
from server.domain.content import Attachment, MessageContent
from server.domain.models import Channel
from server.net.http import OutboundError, RefusedUrl, blocked_address

__all__ = ["SmtpEmailAdapter", "SmtpSettings", "html_to_text"]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_SECURITY_PORTS = {"tls": 465, "starttls": 587, "none": 25}
# Parts are built with 7-bit transfer encodings (quoted-printable or base64 for
# anything else), so the message needs no 8BITMIME from the relay.
_POLICY = policy.SMTP.clone(cte_type="7bit")
# A pooled session idle longer than this is dropped rather than probed: relays
# commonly hang up on quiet clients after a minute or so.
_IDLE_SECONDS = 30.0
# 5xx replies about the session rather than the message (authentication
# required or refused, encryption required): the channel's configuration is
# wrong, and fixing it lets a later attempt of the same message succeed.
_SESSION_CODES = frozenset({530, 534, 535, 538})
_MIME_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*$")
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
        self._pool = _SessionPool(self._settings.max_connections)
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
            sender = _address(content.sender or self._channel.lane, "from")
            if content.options.from_name:
                sender = Address(content.options.from_name, addr_spec=sender.addr_spec)
            to = _address(delivery.destination, "destination")
            cc = [_address(a, "cc") for a in content.cc]
            bcc = [_address(a, "bcc") for a in content.bcc]
            # Not make_msgid(): the same id on every attempt, so when a relay took
            # the message but its reply was lost, receivers can fold the retry away.
            message_id = f"<{delivery.message_id}@{_id_domain(sender, self._settings.host)}>"
            message = _skeleton(content, sender, to, cc, message_id)
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
            data = message.as_bytes(policy=_POLICY.clone(utf8=True) if utf8 else _POLICY)
        except (ValueError, TypeError, email_errors.MessageError) as exc:
            raise PermanentProviderError(
                f"cannot build the email: {exc}", "INVALID_CONTENT"
            ) from exc
        copies = _unique((a.addr_spec for a in [*cc, *bcc]), exclude=to.addr_spec)
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
            name = _file_name(item.name, index)
            fetched.append(_Fetched(name, _mime_type(item.mime_type, served_type), data))
        return fetched

    # -- talking to the relay -------------------------------------------------

    async def _relay(self, outgoing: _Outgoing) -> None:
        async with self._pool.slots:
            smtp = await self._pool.take_idle()
            if smtp is None:
                try:
                    smtp = await self._open_session()
                except (aiosmtplib.SMTPException, OSError) as exc:
                    raise _smtp_failure(exc, setup=True) from exc
            reusable = False
            try:
                await self._transact(smtp, outgoing)
                reusable = True
            except aiosmtplib.SMTPResponseException as exc:
                # The session survives a refusal once the envelope is reset.
                reusable = await _reset(smtp)
                raise _smtp_failure(exc, setup=False) from exc
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise _smtp_failure(exc, setup=False) from exc
            finally:
                self._pool.put(smtp, reusable)

    async def _open_session(self) -> aiosmtplib.SMTP:
        s = self._settings
        sock = None
        if self._resolver is not None:
            async with asyncio.timeout(s.timeout_seconds):
                sock = await _vetted_socket(self._resolver, s.host, s.port)
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


class _SessionPool:
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


async def _reset(smtp: aiosmtplib.SMTP) -> bool:
    if not smtp.is_connected:
        return False
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


def _smtp_failure(exc: BaseException, *, setup: bool) -> ProviderError:
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


async def _vetted_socket(resolver: AbstractResolver, host: str, port: int) -> socket.socket:
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


def _host_url(host: str) -> str:
    bare = host.strip("[]")
    return f"https://[{bare}]/" if ":" in bare else f"https://{bare}/"


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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


# -- message parts -------------------------------------------------------------


def _skeleton(
    content: MessageContent,
    sender: Address,
    to: Address,
    cc: list[Address],
    message_id: str,
) -> EmailMessage:
    """Headers and body; attachments are added once fetched."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = to
    if cc:
        message["Cc"] = cc
    if content.reply_to:
        message["Reply-To"] = content.reply_to
    # A subject is one line; a pasted newline must not end the header block.
    message["Subject"] = " ".join(content.subject.splitlines())
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    one_click = content.list_unsubscribe
    if one_click:
        # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click to the
        # HTTPS link; the mailto: is for clients that only know RFC 2369.
        links = [f"<{one_click}>"]
        if sender.addr_spec.isascii():
            links.append(f"<mailto:{sender.addr_spec}?subject=unsubscribe>")
        message["List-Unsubscribe"] = ", ".join(links)
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    html = content.html if content.type == "html" else ""
    message.set_content(content.text or html_to_text(html))
    if html:
        message.add_alternative(html, subtype="html")
    return message


def _address(raw: str, what: str) -> Address:
    value = raw.strip()
    if "@" not in value or any(c in value for c in "\r\n<>,;"):
        raise ValueError(f"{what} is not a single email address")
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, email_errors.HeaderParseError) as exc:
        raise ValueError(f"{what} is not an email address") from exc
    if not address.username or not address.domain:
        raise ValueError(f"{what} is not an email address")
    return address


def _id_domain(sender: Address, host: str) -> str:
    """The sender's domain names the message, as mail servers do; it must be ASCII."""
    domain = sender.domain
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _unique(addresses: Iterable[str], *, exclude: str) -> tuple[str, ...]:
    seen = {exclude.lower()}
    kept: list[str] = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            kept.append(address)
    return tuple(kept)


def _file_name(raw: Any, index: int) -> str:
    # Only the last path segment, without control characters: clients save under this name.
    name = re.split(r"[/\\]", str(raw or ""))[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name or f"attachment-{index}"


def _mime_type(declared: Any, served: str) -> str:
    for candidate in (str(declared or ""), served.split(";", 1)[0]):
        candidate = candidate.strip().lower()
        if _MIME_TYPE.match(candidate):
            return candidate
    return "application/octet-stream"


def _no_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# -- a plain rendering of HTML -------------------------------------------------

_BLOCKS = frozenset(
    {"p", "div", "br", "hr", "pre", "blockquote", "table", "tr", "ul", "ol", "li", "dl", "dt"}
    | {"dd", "h1", "h2", "h3", "h4", "h5", "h6", "header", "footer", "section", "article"}
    | {"aside", "nav", "main", "address", "form"}
)
_HIDDEN = frozenset({"head", "script", "style", "template", "title"})


class _PlainText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._hidden = 0
        self._links: list[tuple[str, int]] = []  # href, where the link text starts

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self.out.append("\n")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self.out.append("\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.out[start:]).strip()
            # A reader of the plain part still needs where the link went.
            if href.startswith(("http://", "https://", "mailto:")) and href != label:
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.out.append(data)


def html_to_text(html: str) -> str:
    """A readable text/plain alternative for an HTML body that came without one."""
    parser = _PlainText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.out).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
