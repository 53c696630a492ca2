"""What a tenant may put in a channel's settings, and adapters built for a tenant.

The policy is checked over a table of attacks; the adapters are then shown to
hold the line themselves: a tenant's Twilio or SMTP adapter pointed at an
internal address, even through a name that resolves there, never connects.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AdapterContext, PermanentProviderError, RetryableProviderError
from adapters.email_smtp import SmtpEmailAdapter
from adapters.policy import tenant_settings_violations
from adapters.rbm import RbmAdapter
from adapters.registry import build_adapter
from adapters.twilio import TwilioSmsAdapter
from adapters.whatsapp import WhatsAppCloudAdapter
from fakes.smtp import Certificate, CertificateUnavailable, FakeSmtpServer, make_certificate
from fakes.twilio import FakeTwilio
from fakes.whatsapp import PHONE_NUMBER_ID, FakeWhatsApp
from server.api.config_views import REDACTED, redact
from server.config import load_channels
from server.domain.content import parse_content
from server.domain.models import Channel, Delivery
from server.net.addresses import AddressPolicy, url_refusal
from server.net.http import OutboundHttp
from support.listener import MapResolver, recording_listener
from support.net import LOOPBACK, loopback_http

ACCOUNT_SID = "AC" + "7" * 32
TOKEN = "tenant-tw-token-51c0"  # distinctive, so a leak is easy to spot
SERVER_SECRET = "server-only-secret-9e2d"
SET_VAR, UNSET_VAR = "CIMHUB_TEST_SET_SECRET", "CIMHUB_TEST_UNSET_SECRET"

STRICT = AddressPolicy.of(())


def refusal(policy: AddressPolicy = STRICT) -> Any:
    return lambda url: url_refusal(policy, url)


def tenant_channel(provider: str, **settings: Any) -> Channel:
    contact = {"twilio": "SMS", "smtp": "EMAIL", "whatsapp": "WHATSAPP", "rbm": "RCS"}
    return Channel(
        f"{provider}-t", contact.get(provider, "SANDBOX"), provider, lane="+15005550006",
        settings=settings,
    )  # fmt: skip


def twilio(**settings: Any) -> Channel:
    return tenant_channel(
        "twilio", account_sid=ACCOUNT_SID, auth_token=TOKEN, timeout_seconds="0.5", **settings
    )


def fields(channel: Channel, policy: AddressPolicy = STRICT) -> dict[str, str]:
    return {v.field: v.description for v in tenant_settings_violations(channel, refusal(policy))}


# -- the policy, over a table of attacks ---------------------------------------------


def test_an_env_var_reference_is_refused_alike_whether_or_not_it_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SET_VAR, SERVER_SECRET)
    monkeypatch.delenv(UNSET_VAR, raising=False)
    answers = [
        fields(tenant_channel("twilio", account_sid=ACCOUNT_SID, auth_token_env=var))
        for var in (SET_VAR, UNSET_VAR)
    ]
    print(f"\nset: {answers[0]}\nunset: {answers[1]}")
    assert answers[0] == answers[1]
    assert list(answers[0]) == ["settings.auth_token_env"]
    assert "auth_token" in answers[0]["settings.auth_token_env"]
    assert SET_VAR not in str(answers) and SERVER_SECRET not in str(answers)


@pytest.mark.parametrize(
    "key", ["access_token_env", "app_secret_env", "verify_token_env", "password_env", "token_env"]
)
def test_every_credential_reference_is_refused(key: str) -> None:
    assert list(fields(tenant_channel("whatsapp", **{key: SET_VAR}))) == [f"settings.{key}"]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "169.254.169.254",
        "10.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0x7f000001",
        "2130706433",
        "127.1",
        "localhost",
        "[fd00::1]",
    ],
)
def test_base_url_at_an_internal_address_is_refused(host: str) -> None:
    for provider in ("twilio", "whatsapp", "rbm"):
        found = fields(tenant_channel(provider, base_url=f"http://{host}:8080/"))
        assert list(found) == ["settings.base_url"], (provider, host, found)
        assert "refused" in found["settings.base_url"]


def test_base_url_must_be_http() -> None:
    found = fields(twilio(base_url="file:///etc/passwd"))
    assert list(found) == ["settings.base_url"]


def test_production_wants_https() -> None:
    found = fields(twilio(base_url="http://api.twilio.com"), AddressPolicy.of((), https_only=True))
    assert list(found) == ["settings.base_url"]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "relay.localhost", "10.1.2.3", "192.168.0.25", "::1", "[::1]",
     "169.254.169.254", "0177.0.0.1", "::ffff:10.0.0.1"],
)  # fmt: skip
def test_smtp_host_at_an_internal_address_is_refused(host: str) -> None:
    found = fields(tenant_channel("smtp", host=host, port=25, security="none"))
    assert list(found) == ["settings.host"], (host, found)
    assert "refused" in found["settings.host"]


@pytest.mark.parametrize("host", ["smtp.example.com/x@127.0.0.1", "a b", "", "smtp.example.com:25"])
def test_smtp_host_must_be_a_bare_host(host: str) -> None:
    found = fields(tenant_channel("smtp", host=host))
    assert list(found) == ["settings.host"], (host, found)


@pytest.mark.parametrize(
    ("provider", "key", "value"),
    [
        ("sandbox", "sent_log", "/var/lib/cimhub/sent.log"),
        ("smtp", "ca_file", "/etc/ssl/private/server.pem"),
        ("smtp", "client_cert_file", "/etc/cimhub/key.pem"),
        ("sandbox", "spool_path", "/tmp/x"),
        ("sandbox", "state_dir", "/var/lib"),
    ],
)
def test_server_paths_are_refused(provider: str, key: str, value: str) -> None:
    assert list(fields(tenant_channel(provider, **{key: value}))) == [f"settings.{key}"]


def test_nested_and_unknown_settings_are_checked_too() -> None:
    found = fields(
        twilio(
            extra={"callback_url": "http://169.254.169.254/latest/meta-data/"},
            mirrors=["http://10.0.0.1/"],
            nested={"token_env": SET_VAR},
        )
    )
    assert set(found) == {
        "settings.extra.callback_url",
        "settings.mirrors[0]",
        "settings.nested.token_env",
    }


def test_every_field_is_named_at_once() -> None:
    found = fields(
        tenant_channel(
            "twilio", auth_token_env=SET_VAR, base_url="http://127.0.0.1/", sent_log="/tmp/x"
        )
    )
    assert set(found) == {"settings.auth_token_env", "settings.base_url", "settings.sent_log"}


def test_clean_tenant_channels_have_no_violations() -> None:
    clean = [
        twilio(base_url="https://api.twilio.com", messaging_service_sid="MG" + "1" * 32),
        tenant_channel(
            "whatsapp", phone_number_id="1", access_token="a", app_secret="b", verify_token="c"
        ),
        tenant_channel("rbm", agent_id="x", token="t", client_token="c"),
        tenant_channel(
            "smtp", host="smtp.example.com", port=587, username="u", password="p", security="tls"
        ),
        tenant_channel("smtp", host="93.184.216.34", security="none"),
        tenant_channel("sandbox"),
    ]
    for channel in clean:
        assert fields(channel) == {}, channel.provider


def test_outbound_allow_lets_loopback_through() -> None:
    allowed = AddressPolicy.of(LOOPBACK)
    assert fields(twilio(base_url="http://127.0.0.1:9/"), allowed) == {}
    assert fields(tenant_channel("smtp", host="localhost"), allowed) == {}
    # Only loopback was allowed.
    assert list(fields(twilio(base_url="http://10.0.0.1/"), allowed)) == ["settings.base_url"]


def test_redact_hides_every_credential_a_tenant_channel_carries() -> None:
    keys = ["auth_token", "access_token", "app_secret", "verify_token", "password", "token"]
    keys.append("client_token")
    shown = redact({key: SERVER_SECRET for key in keys})
    assert shown == {key: REDACTED for key in keys}


def test_a_file_channel_is_never_checked(tmp_path: Path) -> None:
    """The operator's channels file keeps env references, internal hosts and paths."""
    (tmp_path / "channels.toml").write_text(
        f"""
[[channels]]
id = "sms-ops"
type = "SMS"
provider = "twilio"
account_sid = "{ACCOUNT_SID}"
auth_token_env = "{SET_VAR}"
base_url = "http://127.0.0.1:9"

[[channels]]
id = "sbx-ops"
provider = "sandbox"
sent_log = "{tmp_path / "sent.log"}"
"""
    )
    sms, sandbox = load_channels(tmp_path / "channels.toml")
    ctx = AdapterContext("http://hub.test", OutboundHttp(), env={SET_VAR: SERVER_SECRET})
    assert isinstance(build_adapter(sms, ctx), TwilioSmsAdapter)
    build_adapter(sandbox, ctx)
    # The same channels from a tenant are refused by the adapters themselves.
    for channel in (sms, sandbox):
        with pytest.raises(ValueError):
            build_adapter(channel, ctx, tenant_owned=True)


# -- adapters built for a tenant -----------------------------------------------------


def delivery(channel_id: str, destination: str = "+447700900123", **content: Any) -> Delivery:
    return Delivery(
        message_id="m-1",
        tenant_id="t-1",
        channel_id=channel_id,
        destination=destination,
        type="text",
        text="hello",
        content=parse_content({"type": "text", "text": "hello", **content}),
        attempt=1,
    )


@pytest.fixture
async def strict_fetcher() -> AsyncIterator[OutboundHttp]:
    # api.tenant.example is what a rebinding DNS would answer for a "provider".
    http = OutboundHttp(resolver=MapResolver({"api.tenant.example": ["127.0.0.1"]}))
    yield http
    await http.close()


def test_env_references_are_refused_alike_by_the_adapters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SET_VAR, SERVER_SECRET)
    ctx = AdapterContext("http://hub.test", OutboundHttp())  # env: this process's
    messages = []
    for var in (SET_VAR, UNSET_VAR):
        channel = tenant_channel("twilio", account_sid=ACCOUNT_SID, auth_token_env=var)
        with pytest.raises(ValueError) as refused:
            build_adapter(channel, ctx, tenant_owned=True)
        messages.append(str(refused.value))
    print(f"\n{messages}")
    assert messages[0] == messages[1]
    assert SET_VAR not in messages[0]


@pytest.mark.parametrize(
    ("provider", "settings", "needed"),
    [
        ("twilio", {"account_sid": ACCOUNT_SID}, "auth_token"),
        ("whatsapp", {"phone_number_id": "1", "access_token": "a", "app_secret": "b"}, "verify"),
        ("rbm", {"agent_id": "x", "client_token": "c"}, "token"),
        ("smtp", {"host": "smtp.example.com", "security": "tls", "username": "u"}, "password"),
        ("smtp", {"host": "smtp.example.com", "ca_file": "/etc/passwd"}, "ca_file"),
        ("sandbox", {"sent_log": "/tmp/anything.log"}, "sent_log"),
    ],
)
def test_tenant_adapters_need_values_and_take_no_paths(
    provider: str, settings: dict[str, Any], needed: str
) -> None:
    ctx = AdapterContext("http://hub.test", OutboundHttp(), env={})
    with pytest.raises(ValueError, match=needed):
        build_adapter(tenant_channel(provider, **settings), ctx, tenant_owned=True)


async def test_a_literal_internal_base_url_is_refused_at_build(
    strict_fetcher: OutboundHttp,
) -> None:
    async with recording_listener() as listener:
        ctx = AdapterContext("http://hub.test", strict_fetcher)
        with pytest.raises(ValueError, match="base_url"):
            build_adapter(
                twilio(base_url=f"http://127.0.0.1:{listener.port}"), ctx, tenant_owned=True
            )
        assert listener.connections == 0


async def test_a_name_resolving_to_an_internal_address_never_connects(
    strict_fetcher: OutboundHttp,
) -> None:
    async with recording_listener() as listener:
        ctx = AdapterContext("http://hub.test", strict_fetcher)
        adapter = build_adapter(
            twilio(base_url=f"http://api.tenant.example:{listener.port}"), ctx, tenant_owned=True
        )
        try:
            with pytest.raises(PermanentProviderError) as refused:
                await adapter.send(delivery("twilio-t"))
        finally:
            await adapter.close()
        print(f"\n{refused.value.code}: {refused.value}; connections: {listener.connections}")
        assert refused.value.code == "BLOCKED_ADDRESS"
        assert "refused loopback address 127.0.0.1" in str(refused.value)
        assert listener.connections == 0
        assert not listener.saw(TOKEN)


async def test_an_operator_adapter_is_not_guarded(strict_fetcher: OutboundHttp) -> None:
    """Operators may point a channel at an internal relay; the guard is for tenants."""
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=SERVER_SECRET) as fake:
        ctx = AdapterContext("http://hub.test", strict_fetcher, env={SET_VAR: SERVER_SECRET})
        channel = tenant_channel(
            "twilio", account_sid=ACCOUNT_SID, auth_token_env=SET_VAR, base_url=fake.url
        )
        adapter = build_adapter(channel, ctx)
        try:
            await adapter.send(delivery(channel.channel_id))
        finally:
            await adapter.close()
        assert len(fake.messages) == 1


async def test_a_tenant_twilio_adapter_sends_with_its_own_token() -> None:
    http = loopback_http()
    try:
        async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TOKEN) as fake:
            ctx = AdapterContext("http://hub.test", http, env={SET_VAR: SERVER_SECRET})
            adapter = build_adapter(twilio(base_url=fake.url), ctx, tenant_owned=True)
            try:
                accepted = await adapter.send(delivery("twilio-t"))
            finally:
                await adapter.close()
        [request] = fake.requests
        basic = base64.b64decode(request.headers["Authorization"].split(" ", 1)[1]).decode()
        assert basic == f"{ACCOUNT_SID}:{TOKEN}"
        assert accepted.provider_message_id in fake.messages
        assert SERVER_SECRET not in repr(adapter)
    finally:
        await http.close()


async def test_a_tenant_whatsapp_adapter_sends_with_its_own_token() -> None:
    http = loopback_http()
    try:
        async with FakeWhatsApp(access_token="tenant-wa-token") as fake:
            channel = tenant_channel(
                "whatsapp",
                phone_number_id=PHONE_NUMBER_ID,
                access_token="tenant-wa-token",
                app_secret="tenant-app-secret",
                verify_token="tenant-verify",
                base_url=fake.url,
            )
            adapter = build_adapter(
                channel, AdapterContext("http://hub.test", http), tenant_owned=True
            )
            assert isinstance(adapter, WhatsAppCloudAdapter)
            try:
                accepted = await adapter.send(delivery(channel.channel_id, "+447700900123"))
            finally:
                await adapter.close()
        [(wamid, body)] = fake.accepted
        assert accepted.provider_message_id == wamid
        assert body["to"] == "447700900123"
    finally:
        await http.close()


def test_a_tenant_rbm_adapter_authorises_with_its_own_token() -> None:
    ctx = AdapterContext("http://hub.test", OutboundHttp(), env={"token": SERVER_SECRET})
    adapter = build_adapter(
        tenant_channel("rbm", agent_id="agent", token="tenant-rbm", client_token="c"),
        ctx,
        tenant_owned=True,
    )
    assert isinstance(adapter, RbmAdapter)
    assert adapter._auth() == {"Authorization": "Bearer tenant-rbm"}


# -- SMTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    try:
        return make_certificate(tmp_path_factory.mktemp("tls"))
    except CertificateUnavailable as exc:
        pytest.fail(str(exc))


def smtp_channel(host: str, port: int, **settings: Any) -> Channel:
    return Channel(
        "email-t", "EMAIL", "smtp", lane="news@brand.example.org",
        settings={"host": host, "port": port, "security": "none", **settings},
    )  # fmt: skip


async def test_a_tenant_smtp_host_resolving_inside_never_connects(
    strict_fetcher: OutboundHttp,
) -> None:
    async with recording_listener() as listener:
        ctx = AdapterContext("http://hub.test", strict_fetcher)
        channel = smtp_channel("api.tenant.example", listener.port)
        adapter = build_adapter(channel, ctx, tenant_owned=True)
        try:
            with pytest.raises(PermanentProviderError) as refused:
                await adapter.send(delivery(channel.channel_id, "someone@example.com"))
        finally:
            await adapter.close()
        print(f"\n{refused.value.code}: {refused.value}; connections: {listener.connections}")
        assert refused.value.code == "BLOCKED_ADDRESS"
        assert listener.connections == 0
        with pytest.raises(ValueError, match="host"):
            build_adapter(smtp_channel("127.0.0.1", listener.port), ctx, tenant_owned=True)


@pytest.mark.parametrize(("host", "trusted"), [("localhost", True), ("relay.test", False)])
async def test_tenant_smtp_checks_tls_against_the_host_name(
    certificate: Certificate, monkeypatch: pytest.MonkeyPatch, host: str, trusted: bool
) -> None:
    """The connection goes to the vetted address, and TLS still checks the name.

    The test certificate names 127.0.0.1 and localhost: were the address used for
    the check, relay.test (which resolves to 127.0.0.1) would pass too.
    """
    # A tenant cannot name a CA file, so the test certificate joins the default roots.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert_file))
    server = await FakeSmtpServer(
        security="starttls", certificate=certificate, auth=("relay-user", "tenant-pw")
    ).start()
    http = OutboundHttp(
        policy=AddressPolicy.of(LOOPBACK),
        resolver=MapResolver({host: ["127.0.0.1"]}),
    )
    channel = smtp_channel(
        host, server.port, security="starttls", username="relay-user", password="tenant-pw"
    )
    adapter = build_adapter(channel, AdapterContext("http://hub.test", http), tenant_owned=True)
    assert isinstance(adapter, SmtpEmailAdapter)
    try:
        if trusted:
            await adapter.send(delivery(channel.channel_id, "someone@example.com"))
            [mail] = server.received
            assert mail.tls and mail.login == "relay-user"
        else:
            with pytest.raises(RetryableProviderError) as failed:
                await adapter.send(delivery(channel.channel_id, "someone@example.com"))
            assert failed.value.code == "TLS"
            assert "mismatch" in str(failed.value).lower(), failed.value
            assert server.received == []
    finally:
        await adapter.close()
        await http.close()
        await server.stop()
