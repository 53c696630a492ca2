"""A real SMTP server on loopback for email adapter tests, and what those tests need around it.

- FakeSmtpServer: aiosmtpd behind its threaded Controller, on an ephemeral
  port. Plain, STARTTLS (required) or implicit TLS; optional AUTH LOGIN/PLAIN
  for one user, only over TLS. Behaviours: refuse listed recipients with 550,
  answer 451 to the first `tempfail` messages, hang up on idle sessions.
- BlackHoleSmtp: accepts TCP connections and never sends a greeting.
- MediaServer: an aiohttp server for attachment downloads.
- make_certificate: a self-signed certificate for 127.0.0.1 and localhost.
"""

from __future__ import annotations

import asyncio
import email
import ipaddress
import shutil
import ssl
import struct
import subprocess
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# -- certificates --------------------------------------------------------------


class CertificateUnavailable(Exception):
    """Neither the cryptography package nor the openssl command is here."""


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(directory: Path) -> Certificate:
    """A one-day self-signed certificate, valid for 127.0.0.1 and localhost."""
    cert = Certificate(directory / "smtp-cert.pem", directory / "smtp-key.pem")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _with_openssl(cert)
    else:
        _with_cryptography(cert)
    return cert


def _with_cryptography(cert: Certificate) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        # Its own trust anchor, so it must be allowed to be one.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _with_openssl(cert: Certificate) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateUnavailable("neither the cryptography package nor openssl is installed")
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(cert.key_file), "-out", str(cert.cert_file)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


# -- the SMTP server -----------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # the message as it arrived, after DATA's dot-unstuffing
    peer: Any
    tls: bool
    login: str | None  # the AUTH user, when the session authenticated

    def message(self) -> EmailMessage:
        return cast(EmailMessage, email.message_from_bytes(self.data, policy=policy.default))


class _EphemeralController(Controller):
    """Controller dials its own port once started; learn it first when bound to port 0."""

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()


class FakeSmtpServer:
    def __init__(
        self,
        *,
        security: str = "none",  # none, starttls (required) or tls (implicit)
        certificate: Certificate | None = None,
        auth: tuple[str, str] | None = None,
        reject: Iterable[str] = (),
        tempfail: int = 0,
        idle_timeout: float = 300,
    ) -> None:
        if security != "none" and certificate is None:
            raise ValueError("TLS needs a certificate")
        self.security = security
        self.auth = auth
        self.reject = {address.lower() for address in reject}
        self.tempfail = tempfail
        self.received: list[ReceivedMail] = []
        self.peers: set[Any] = set()  # one per connection that said EHLO
        self.data_commands = 0
        self.auth_attempts = 0
        kwargs: dict[str, Any] = {"timeout": idle_timeout, "server_hostname": "fake-smtp.test"}
        if security == "starttls":
            assert certificate is not None
            kwargs.update(tls_context=certificate.server_context(), require_starttls=True)
        elif security == "tls":
            assert certificate is not None
            kwargs["ssl_context"] = certificate.server_context()
        if auth is not None:
            # aiosmtpd counts only STARTTLS as TLS; with implicit TLS every byte is encrypted.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=security != "tls")
        self._controller = _EphemeralController(self, hostname="127.0.0.1", port=0, **kwargs)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    async def start(self) -> FakeSmtpServer:
        # The controller runs its own loop in a thread and blocks until it answers.
        await asyncio.to_thread(self._controller.start)
        return self

    async def stop(self) -> None:
        await asyncio.to_thread(self._controller.stop)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts += 1
        assert self.auth is not None
        user, password = self.auth
        ok = (
            isinstance(data, LoginPassword)
            and data.login == user.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    # aiosmtpd handler hooks; they run on the controller's thread.

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        session.host_name = hostname
        self.peers.add(session.peer)
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.lower() in self.reject:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_commands += 1
        if self.data_commands <= self.tempfail:
            return "451 4.3.0 try again later"
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.received.append(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=content,
                peer=session.peer,
                tls=server.transport is not None
                and server.transport.get_extra_info("sslcontext") is not None,
                login=cast(str | None, session.auth_data) if session.authenticated else None,
            )
        )
        return "250 2.0.0 queued"


class BlackHoleSmtp:
    """Takes the connection, then says nothing: the client's own timeout must end it."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    @property
    def host(self) -> str:
        return "127.0.0.1"

    async def start(self) -> BlackHoleSmtp:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        await reader.read()  # until the client gives up

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# -- attachments ---------------------------------------------------------------


def png_bytes() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x80\x00\xff")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


class MediaServer:
    """Serves /wings.png, /big.bin (`big_size` bytes), /missing (404) and /flaky (503)."""

    def __init__(self, *, big_size: int = 256 * 1024) -> None:
        self.png = png_bytes()
        self.big = bytes(range(256)) * (big_size // 256) + b"\x00" * (big_size % 256)
        self.hits: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application()
        app.router.add_get("/wings.png", self._png)
        app.router.add_get("/big.bin", self._big)
        app.router.add_get("/missing", self._status(404))
        app.router.add_get("/flaky", self._status(503))
        self._app = app

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> MediaServer:
        self._runner = web.AppRunner(self._app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _png(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        return web.Response(body=self.png, content_type="image/png")

    async def _big(self, request: web.Request) -> web.Response:
        self.hits.append(request.path_qs)
        return web.Response(body=self.big, content_type="application/octet-stream")

    def _status(self, status: int) -> Any:
        async def answer(request: web.Request) -> web.Response:
            self.hits.append(request.path_qs)
            return web.Response(status=status, text="no")

        return answer
