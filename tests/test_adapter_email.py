"""The SMTP email adapter against a real SMTP server (aiosmtpd) and a real media server.

Every message is parsed back from the bytes the server received, so these
tests check the MIME a mail client would see, not the adapter's intentions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AdapterContext, PermanentProviderError, RetryableProviderError
from adapters.email_smtp import SmtpEmailAdapter, SmtpSettings
from fakes.smtp import (
    BlackHoleSmtp,
    Certificate,
    CertificateUnavailable,
    FakeSmtpServer,
    MediaServer,
    make_certificate,
)
from server.domain.content import parse_content
from server.domain.models import Channel, Delivery
from server.net.http import OutboundHttp
from support.net import loopback_http

SEED = json.loads((Path(__file__).parent / "seeds" / "v2_email.json").read_text())
SENDER = SEED["from"]
DESTINATION = SEED["to"][0]["email"][0]
BCC = "archive@brand.example.org"
UNSUBSCRIBE = f"mailto:{SENDER}?subject=unsubscribe"
USER, PASSWORD = "relay-user", "pa55-Never-Shown"
ENV = {"SMTP_PASSWORD": PASSWORD, "WRONG_PASSWORD": "not-the-password"}


def seed_content(media: MediaServer, **overrides: Any) -> dict[str, Any]:
    """delivery.content as a batch send of the seed leaves it: rendered, shared fields merged."""
    content = json.loads(json.dumps(SEED["content"]))
    content["html"] = content["html"].replace("$(unsubscribe)", UNSUBSCRIBE)
    for attachment in content["attachments"]:
        attachment["mediaUrl"] = media.url("/wings.png")
    shared = {"from": SENDER, "options": dict(SEED["options"]), "cc": SEED["cc"], "bcc": [BCC]}
    return {**content, **shared, **overrides}


def delivery(content: dict[str, Any], destination: str = DESTINATION) -> Delivery:
    return Delivery(
        message_id=str(uuid.uuid4()),
        tenant_id="tenant-1",
        channel_id="email-1",
        destination=destination,
        type=str(content.get("type", "text")),
        text=str(content.get("text") or content.get("subject") or ""),
        content=parse_content(content),
        attempt=1,
    )


def parts(message: EmailMessage) -> dict[str, Any]:
    """The leaf parts by content type (one of each in these tests)."""
    return {part.get_content_type(): part for part in message.walk() if not part.is_multipart()}


def body(part: Any) -> str:
    # CRLF is the wire form of a line break; compare text as the sender wrote it.
    return str(part.get_content()).replace("\r\n", "\n")


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


# -- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    try:
        return make_certificate(tmp_path_factory.mktemp("tls"))
    except CertificateUnavailable as exc:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
async def media() -> AsyncIterator[MediaServer]:
    server = await MediaServer(big_size=256 * 1024).start()
    yield server
    await server.stop()


@pytest.fixture
async def fetcher() -> AsyncIterator[OutboundHttp]:
    client = loopback_http()
    yield client
    await client.close()


StartSmtp = Callable[..., Awaitable[FakeSmtpServer]]
MakeAdapter = Callable[..., SmtpEmailAdapter]


@pytest.fixture
async def start_smtp() -> AsyncIterator[StartSmtp]:
    started: list[FakeSmtpServer] = []

    async def start(**kwargs: Any) -> FakeSmtpServer:
        server = await FakeSmtpServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def make_adapter(start_smtp: StartSmtp, fetcher: OutboundHttp) -> AsyncIterator[MakeAdapter]:
    """Adapters for a host:port; closed before the servers stop (this depends on start_smtp)."""
    made: list[SmtpEmailAdapter] = []

    def make(port: int, **settings: Any) -> SmtpEmailAdapter:
        channel = Channel(
            channel_id="email-1",
            contact_type="email",
            provider="smtp",
            lane=SENDER,
            settings={"host": "127.0.0.1", "port": port, "security": "none", **settings},
        )
        adapter = SmtpEmailAdapter(channel, AdapterContext("http://hub.test", fetcher, env=ENV))
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        await adapter.close()


async def test_one_click_unsubscribe_headers_follow_rfc_8058(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, media: MediaServer
) -> None:
    server = await start_smtp()
    link = "https://hub.test/unsubscribe/eyJ0IjoiYSJ9.c2ln"
    adapter = make_adapter(server.port)

    await adapter.send(delivery(seed_content(media, listUnsubscribe=link)))
    await adapter.send(delivery(seed_content(media)))

    with_link, without = (mail.message() for mail in server.received)
    assert with_link["List-Unsubscribe"] == f"<{link}>, <{UNSUBSCRIBE}>"
    assert with_link["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # No signed link, no one-click promise: a mail client would POST to nothing.
    assert "List-Unsubscribe-Post" not in without
    assert "List-Unsubscribe" not in without


def tls_settings(certificate: Certificate, security: str = "starttls") -> dict[str, Any]:
    return {
        "security": security,
        "username": USER,
        "password_env": "SMTP_PASSWORD",
        "ca_file": str(certificate.cert_file),
    }


# -- the message ---------------------------------------------------------------


async def test_seed_email_arrives_as_sent(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, media: MediaServer
) -> None:
    server = await start_smtp()
    content = seed_content(media)

    accepted = await make_adapter(server.port).send(delivery(content))

    [mail] = server.received
    assert mail.mail_from == SENDER
    assert mail.rcpt_tos == [DESTINATION, "audit@brand.example.org", BCC]
    message = mail.message()
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Brand Name", SENDER)
    assert [a.addr_spec for a in message["To"].addresses] == [DESTINATION]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["audit@brand.example.org"]
    assert "Bcc" not in message
    assert BCC.encode() not in mail.data  # only in the envelope
    assert [a.addr_spec for a in message["Reply-To"].addresses] == ["support@brand.example.org"]
    assert message["Subject"] == "Food"
    assert message["Message-ID"] == accepted.provider_message_id
    assert accepted.provider_message_id.endswith("@brand.example.org>")
    assert message["Date"] is not None

    assert message.get_content_type() == "multipart/mixed"
    alternative, attachment = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    found = parts(message)
    assert body(found["text/plain"]) == "This is a new email\n"
    assert body(found["text/html"]) == content["html"] + "\n"
    assert "no-track-connect" in body(found["text/html"])
    assert attachment.get_content_type() == "image/png"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "wings"
    assert attachment.get_content() == media.png
    assert media.hits == ["/wings.png"]  # fetched through ctx.fetcher, once


async def test_html_without_text_gets_a_plain_rendering(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, media: MediaServer
) -> None:
    server = await start_smtp()
    content = seed_content(media, text="", attachments=[])

    await make_adapter(server.port).send(delivery(content))

    message = server.received[0].message()
    assert message.get_content_type() == "multipart/alternative"
    found = parts(message)
    assert body(found["text/plain"]) == (
        f"link text (http://example.com)\nunsubscribe ({UNSUBSCRIBE})\n"
    )
    assert body(found["text/html"]) == content["html"] + "\n"


async def test_text_email_is_one_plain_part(
    start_smtp: StartSmtp, make_adapter: MakeAdapter
) -> None:
    server = await start_smtp()
    content = {"type": "text", "subject": "Hi", "text": "Line one\nLine two", "from": SENDER}

    await make_adapter(server.port).send(delivery(content))

    message = server.received[0].message()
    assert message.get_content_type() == "text/plain"
    assert body(message) == "Line one\nLine two\n"
    assert "Cc" not in message and "Reply-To" not in message
    assert server.received[0].rcpt_tos == [DESTINATION]


async def test_non_ascii_names_subject_and_body_survive(
    start_smtp: StartSmtp, make_adapter: MakeAdapter
) -> None:
    server = await start_smtp()
    text = "Grüße, ça va? " + "ÿ" * 120  # a long line, so no 7bit either way
    content = {
        "type": "text",
        "subject": "Überraschung\r\nBcc: injected@example.com",
        "text": text,
        "from": SENDER,
        "options": {"fromName": "Zoë, Brand"},
    }

    await make_adapter(server.port).send(delivery(content))

    message = server.received[0].message()
    assert message["From"].addresses[0].display_name == "Zoë, Brand"
    # A pasted line break stays inside the subject instead of starting a header.
    assert message["Subject"] == "Überraschung Bcc: injected@example.com"
    assert "Bcc" not in message
    assert body(message) == text + "\n"
    assert server.received[0].data.isascii()  # needs no 8BITMIME or SMTPUTF8


async def test_invalid_sender_is_permanent(
    start_smtp: StartSmtp, make_adapter: MakeAdapter
) -> None:
    server = await start_smtp()
    content = {"type": "text", "text": "hi", "from": "not an address"}

    with pytest.raises(PermanentProviderError) as caught:
        await make_adapter(server.port).send(delivery(content))

    assert caught.value.code == "INVALID_CONTENT"
    assert server.received == []


# -- TLS and authentication ----------------------------------------------------


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_with_auth_delivers(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, certificate: Certificate, security: str
) -> None:
    server = await start_smtp(security=security, certificate=certificate, auth=(USER, PASSWORD))
    adapter = make_adapter(server.port, **tls_settings(certificate, security))

    await adapter.send(delivery({"type": "text", "text": "secret plans", "from": SENDER}))

    [mail] = server.received
    assert mail.tls and mail.login == USER
    assert PASSWORD not in repr(adapter)


async def test_wrong_password_is_retryable_and_never_shown(
    start_smtp: StartSmtp,
    make_adapter: MakeAdapter,
    certificate: Certificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await start_smtp(security="starttls", certificate=certificate, auth=(USER, PASSWORD))
    settings = tls_settings(certificate) | {"password_env": "WRONG_PASSWORD"}
    adapter = make_adapter(server.port, **settings)

    with pytest.raises(RetryableProviderError) as caught:
        await adapter.send(delivery({"type": "text", "text": "hi", "from": SENDER}))

    # Credentials are the channel's problem, not the message's: retry once fixed.
    assert caught.value.code == "535"
    assert server.auth_attempts >= 1 and server.received == []
    wrong = ENV["WRONG_PASSWORD"]
    shown = [str(e) for e in chain(caught.value)] + [repr(e) for e in chain(caught.value)]
    shown += traceback.format_exception(caught.value)
    shown += [repr(adapter), repr(SmtpSettings.from_channel(adapter._channel, ENV))]
    # The fake server's own log ("mail.log") sees the credentials it is sent; ours must not.
    shown += [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    for text in shown:
        assert wrong not in text and PASSWORD not in text


async def test_untrusted_certificate_is_refused(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, certificate: Certificate
) -> None:
    server = await start_smtp(security="starttls", certificate=certificate, auth=(USER, PASSWORD))
    settings = tls_settings(certificate)
    del settings["ca_file"]  # the system's roots do not know the test certificate

    with pytest.raises(RetryableProviderError) as caught:
        await make_adapter(server.port, **settings).send(
            delivery({"type": "text", "text": "hi", "from": SENDER})
        )

    assert caught.value.code == "TLS"
    assert server.auth_attempts == 0 and server.received == []


async def test_validate_certs_false_accepts_a_self_signed_relay(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, certificate: Certificate
) -> None:
    server = await start_smtp(security="tls", certificate=certificate)
    adapter = make_adapter(server.port, security="tls", validate_certs="false")

    await adapter.send(delivery({"type": "text", "text": "hi", "from": SENDER}))

    assert server.received[0].tls


# -- failures ------------------------------------------------------------------


async def test_refused_destination_is_permanent_and_the_session_survives(
    start_smtp: StartSmtp, make_adapter: MakeAdapter
) -> None:
    server = await start_smtp(reject=["gone@example.com"])
    adapter = make_adapter(server.port)
    content = {"type": "text", "text": "hi", "from": SENDER, "cc": ["audit@brand.example.org"]}

    with pytest.raises(PermanentProviderError) as caught:
        await adapter.send(delivery(content, destination="gone@example.com"))
    assert caught.value.code == "550"
    assert server.received == []  # not even the Cc copy

    await adapter.send(delivery(content))
    assert [m.rcpt_tos for m in server.received] == [[DESTINATION, "audit@brand.example.org"]]
    assert len(server.peers) == 1  # RSET, then the same session again


async def test_refused_copy_does_not_fail_the_delivery(
    start_smtp: StartSmtp, make_adapter: MakeAdapter
) -> None:
    server = await start_smtp(reject=["gone@example.com"])
    content = {"type": "text", "text": "hi", "from": SENDER, "cc": ["gone@example.com"]}

    await make_adapter(server.port).send(delivery(content))

    assert server.received[0].rcpt_tos == [DESTINATION]


async def test_temporary_failure_is_retryable_then_succeeds(
    start_smtp: StartSmtp, make_adapter: MakeAdapter
) -> None:
    server = await start_smtp(tempfail=1)
    adapter = make_adapter(server.port)
    message = delivery({"type": "text", "text": "hi", "from": SENDER})

    with pytest.raises(RetryableProviderError) as caught:
        await adapter.send(message)
    assert caught.value.code == "451"
    assert server.received == []

    accepted = await adapter.send(message)
    assert [m.message()["Message-ID"] for m in server.received] == [accepted.provider_message_id]


async def test_black_hole_times_out_within_the_configured_timeout(
    make_adapter: MakeAdapter,
) -> None:
    hole = await BlackHoleSmtp().start()
    try:
        adapter = make_adapter(hole.port, timeout_seconds=0.5)
        started = time.monotonic()
        with pytest.raises(RetryableProviderError) as caught:
            await adapter.send(delivery({"type": "text", "text": "hi", "from": SENDER}))
        elapsed = time.monotonic() - started
    finally:
        await hole.stop()

    assert caught.value.code == "TIMEOUT"
    assert hole.connections == 1
    assert 0.4 <= elapsed < 2.0


async def test_unreachable_relay_is_retryable(make_adapter: MakeAdapter) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(RetryableProviderError) as caught:
        await make_adapter(port).send(delivery({"type": "text", "text": "hi", "from": SENDER}))

    assert caught.value.code == "NETWORK"


# -- attachments ---------------------------------------------------------------


def with_attachments(media: MediaServer, *items: dict[str, Any]) -> dict[str, Any]:
    return seed_content(media, attachments=list(items))


async def test_attachment_over_the_cap_is_permanent_and_nothing_is_sent(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, media: MediaServer
) -> None:
    server = await start_smtp()
    content = with_attachments(
        media, {"mimeType": "application/pdf", "name": "big.pdf", "mediaUrl": media.url("/big.bin")}
    )

    with pytest.raises(PermanentProviderError) as caught:
        await make_adapter(server.port, max_attachment_bytes=100_000).send(delivery(content))

    assert caught.value.code == "ATTACHMENT"
    assert media.hits == ["/big.bin"]
    assert server.received == [] and server.peers == set()  # no SMTP session at all


async def test_declared_size_over_the_cap_is_not_even_fetched(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, media: MediaServer
) -> None:
    server = await start_smtp()
    item = {"mimeType": "application/pdf", "name": "big.pdf", "mediaUrl": media.url("/big.bin")}
    content = with_attachments(media, item | {"size": 300_000})

    with pytest.raises(PermanentProviderError) as caught:
        await make_adapter(server.port, max_attachment_bytes=100_000).send(delivery(content))

    assert caught.value.code == "ATTACHMENT"
    assert media.hits == [] and server.received == []


async def test_the_cap_is_for_all_attachments_together(
    start_smtp: StartSmtp, make_adapter: MakeAdapter, media: MediaServer
) -> None:
    server = await start_smtp()
    item = {"mimeType": "application/zip", "name": "part.zip", "mediaUrl": media.url("/big.bin")}
    content = with_attachments(media, item, item)
    adapter = make_adapter(server.port, max_attachment_bytes=400_000)  # one fits, two do not

    with pytest.raises(PermanentProviderError) as caught:
        await adapter.send(delivery(content))

    assert caught.value.code == "ATTACHMENT"
    assert media.hits == ["/big.bin", "/big.bin"] and server.received == []


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/missing", PermanentProviderError),  # 404 stays 404
        ("/flaky", RetryableProviderError),  # a 503 from the media host may pass
        (None, RetryableProviderError),  # the media host is down
    ],
)
async def test_attachment_fetch_failures(
    start_smtp: StartSmtp,
    make_adapter: MakeAdapter,
    media: MediaServer,
    path: str | None,
    error: type[Exception],
) -> None:
    server = await start_smtp()
    if path is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{probe.getsockname()[1]}/wings.png?sig=presigned-token"
    else:
        url = media.url(path) + "?sig=presigned-token"
    content = with_attachments(media, {"mimeType": "image/png", "name": "w", "mediaUrl": url})

    with pytest.raises(error) as caught:
        await make_adapter(server.port).send(delivery(content))

    assert type(caught.value) is error
    assert getattr(caught.value, "code", "") == "ATTACHMENT"
    assert "presigned-token" not in str(caught.value)
    assert server.received == []


# -- sessions --------------------------------------------------------------------


async def test_concurrent_sends_share_a_few_sessions(
    start_smtp: StartSmtp, make_adapter: MakeAdapter
) -> None:
    server = await start_smtp()
    adapter = make_adapter(server.port, max_connections=2)
    messages = [delivery({"type": "text", "text": f"n{i}", "from": SENDER}) for i in range(10)]

    accepted = await asyncio.gather(*(adapter.send(m) for m in messages))

    received = {m.message()["Message-ID"] for m in server.received}
    assert received == {a.provider_message_id for a in accepted}
    assert len(received) == 10
    assert 1 <= len(server.peers) <= 2


async def test_a_session_the_relay_dropped_is_replaced(
    start_smtp: StartSmtp, make_adapter: MakeAdapter
) -> None:
    server = await start_smtp(idle_timeout=0.3)
    adapter = make_adapter(server.port)

    await adapter.send(delivery({"type": "text", "text": "one", "from": SENDER}))
    await asyncio.sleep(0.8)  # the relay hangs up on the idle session
    await adapter.send(delivery({"type": "text", "text": "two", "from": SENDER}))

    assert len(server.received) == 2
    assert len(server.peers) == 2


# -- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"security": "ssl"}, "security"),
        ({"username": USER, "password_env": "SMTP_PASSWORD"}, "in clear"),
        ({"security": "tls", "username": USER, "password_env": "UNSET_VAR"}, "UNSET_VAR"),
        ({"security": "tls", "username": USER}, "password_env"),
        ({"timeout_seconds": "soon"}, "timeout_seconds"),
        ({"max_attachment_bytes": 0}, "max_attachment_bytes"),
        ({"security": "tls", "validate_certs": "maybe"}, "validate_certs"),
        ({"host": None}, "host"),
    ],
)
def test_bad_settings_fail_at_construction(
    fetcher: OutboundHttp, settings: dict[str, Any], complaint: str
) -> None:
    merged = {"host": "127.0.0.1", "security": "none", **settings}
    channel = Channel("email-1", "email", "smtp", lane=SENDER, settings=merged)

    with pytest.raises(ValueError, match=complaint) as caught:
        SmtpEmailAdapter(channel, AdapterContext("http://hub.test", fetcher, env=ENV))

    assert PASSWORD not in str(caught.value)
