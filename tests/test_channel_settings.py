"""A channel's settings are read once, when it is built, each by its rule; a bad one
is refused then, naming the setting, and never reaches a send."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.base import AdapterContext
from adapters.registry import build_adapter
from adapters.settings import SettingError
from server.domain.models import Channel
from server.net.http import OutboundHttp
from support.hub import AUTH_HEADERS, rest_call, running_hub

ENV = {"TOKEN": "t0ken", "SECRET": "s3cret", "VERIFY": "v3rify", "PASSWORD": "pa55"}

# A channel of each provider that builds, as the channels file would give it.
GOOD: dict[str, dict[str, Any]] = {
    "sandbox": {},
    "twilio": {"account_sid": "AC" + "1" * 32, "auth_token_env": "TOKEN"},
    "whatsapp": {
        "phone_number_id": "1065",
        "access_token_env": "TOKEN",
        "app_secret_env": "SECRET",
        "verify_token_env": "VERIFY",
    },
    "rbm": {"agent_id": "agent", "token_env": "TOKEN", "client_token_env": "SECRET"},
    "smtp": {"host": "smtp.example.com", "username": "u", "password_env": "PASSWORD"},
}


def build(provider: str, **settings: Any) -> Any:
    channel = Channel("c-1", "SMS", provider, settings={**GOOD[provider], **settings})
    return build_adapter(channel, AdapterContext("http://hub.test", OutboundHttp(), env=ENV))


@pytest.mark.parametrize("provider", sorted(GOOD))
def test_each_provider_builds_from_good_settings(provider: str) -> None:
    assert build(provider) is not None


@pytest.mark.parametrize(
    ("provider", "setting", "value", "why"),
    [
        ("sandbox", "receipt_status", "SEEN", "must be one of DELIVERED, READ, NONE"),
        ("twilio", "account_sid", True, "must be text"),
        ("twilio", "timeout_seconds", "soon", "must be a number"),
        ("twilio", "timeout_seconds", -1, "above 0"),
        ("twilio", "timeout_seconds", "inf", "finite"),
        ("twilio", "base_url", "api.twilio.com", "absolute http(s) URL"),
        ("twilio", "auth_token_env", "UNSET", "UNSET, which is empty or unset"),
        ("whatsapp", "timeout_seconds", 0, "above 0"),
        ("whatsapp", "base_url", "ftp://graph.example.com", "absolute http(s) URL"),
        ("whatsapp", "verify_token_env", None, "is required"),
        ("rbm", "agent_id", None, "is required"),
        ("rbm", "timeout_seconds", "ten", "must be a number"),
        ("rbm", "token_env", "UNSET", "UNSET, which is empty or unset"),
        ("smtp", "port", 70000, "must be 1 to 65535"),
        ("smtp", "port", "25.5", "whole number"),
        ("smtp", "max_connections", 2.5, "whole number"),
        ("smtp", "max_attachment_bytes", 0, "at least 1"),
        ("smtp", "validate_certs", "maybe", "must be true or false"),
        ("smtp", "security", "ssl", "must be one of starttls, tls, none"),
    ],
)
def test_a_bad_setting_is_refused_at_build_naming_it(
    provider: str, setting: str, value: Any, why: str
) -> None:
    with pytest.raises(SettingError) as refused:
        build(provider, **{setting: value})
    print(f"\n{refused.value}")
    assert refused.value.setting == setting
    assert f"setting {setting!r}" in str(refused.value)
    assert why in str(refused.value)
    for secret in ENV.values():
        assert secret not in str(refused.value)


@pytest.mark.parametrize(
    ("provider", "setting", "value", "read_as"),
    [
        ("twilio", "timeout_seconds", "2.5", 2.5),
        ("smtp", "port", "2525", 2525),
        ("smtp", "validate_certs", "off", False),
        ("sandbox", "receipt_status", "read", "READ"),
    ],
)
def test_values_are_read_by_the_shared_rules(
    provider: str, setting: str, value: Any, read_as: Any
) -> None:
    adapter = build(provider, **{setting: value})
    if provider == "twilio":
        assert adapter._http._timeout.total == read_as
    elif provider == "smtp" and setting == "port":
        assert adapter._settings.port == read_as
    elif provider == "smtp":
        assert adapter._settings.tls_context.check_hostname is read_as
    else:
        assert adapter._report_status.value == read_as


async def test_the_config_api_refuses_a_bad_setting_naming_the_field(db_url: str) -> None:
    channel = {
        "channelId": "t-sms",
        "contactType": "SMS",
        "provider": "twilio",
        "lane": "+15005550006",
        "settings": {
            "account_sid": "AC" + "2" * 32,
            "auth_token": "tok",
            "timeout_seconds": "soon",
        },
    }
    async with running_hub(db_url) as hub:
        status, refused = await rest_call(
            hub, "POST", "/api/v1/config/channels", AUTH_HEADERS, channel
        )
        print(f"\n{refused}")
        assert status == 400, refused
        fields = {e["field"]: e["description"] for e in refused["errors"]}
        assert list(fields) == ["settings.timeout_seconds"]
        assert "must be a number" in fields["settings.timeout_seconds"]
        status, _ = await rest_call(hub, "GET", "/api/v1/config/channels/t-sms", AUTH_HEADERS)
        assert status == 404
        assert hub.channels.get("t-sms") is None


def test_setting_errors_are_value_errors_for_the_channels_file() -> None:
    # The registry reports a channels-file channel unhealthy on any ValueError.
    assert issubclass(SettingError, ValueError)
