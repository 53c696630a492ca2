"""One mapping from a provider's HTTP answer to the hub's outcome, and every HTTP
adapter goes through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

import adapters.provider_http as provider_http
from adapters.base import (
    AdapterContext,
    ChannelAdapter,
    Delivery,
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
)
from adapters.provider_http import (
    HttpAnswer,
    ProviderFault,
    Verdict,
    network_failure,
    no_details,
    provider_failure,
    retry_after_seconds,
)
from adapters.rbm import RbmAdapter, google_fault
from adapters.twilio import TwilioSmsAdapter, twilio_fault
from adapters.whatsapp import WhatsAppCloudAdapter, meta_fault
from fakes.rbm import FakeRbm
from fakes.server import Behaviour, FakeProviderServer
from fakes.twilio import FakeTwilio
from fakes.whatsapp import PHONE_NUMBER_ID, FakeWhatsApp
from server.domain.content import MessageContent
from server.domain.models import Channel
from server.domain.provider import RecipientOptedOut
from support.net import loopback_http

NOW = 1_750_000_000.0


def fixed(fault: ProviderFault) -> Callable[[HttpAnswer], ProviderFault]:
    return lambda _answer: fault


@pytest.mark.parametrize(
    ("status", "headers", "fault", "kind", "code", "retry_after", "reason"),
    [
        # Throttled: retry, after Retry-After; the body's own delay when there is none.
        (429, {"Retry-After": "7"}, ProviderFault(), RetryableProviderError, "429", 7.0, None),
        (429, {"retry-after": "0.5"}, ProviderFault(), RetryableProviderError, "429", 0.5, None),
        (429, {}, ProviderFault(), RetryableProviderError, "429", None, None),
        (429, {}, ProviderFault(retry_after=2.0), RetryableProviderError, "429", 2.0, None),
        (
            429,
            {"Retry-After": "5"},
            ProviderFault(retry_after=2.0),
            RetryableProviderError,
            "429",
            5.0,
            None,
        ),
        (429, {"Retry-After": "-3"}, ProviderFault(), RetryableProviderError, "429", 0.0, None),
        (429, {"Retry-After": "soon"}, ProviderFault(), RetryableProviderError, "429", None, None),
        # Transient: retry, after Retry-After when a 503 gives one.
        (500, {}, ProviderFault(), RetryableProviderError, "500", None, None),
        (503, {"Retry-After": "4"}, ProviderFault(), RetryableProviderError, "503", 4.0, None),
        (502, {}, ProviderFault("E1", "upstream"), RetryableProviderError, "E1", None, "upstream"),
        # Any other status is permanent, with the provider's code and message.
        (400, {}, ProviderFault(), PermanentProviderError, "400", None, None),
        (
            404,
            {},
            ProviderFault("21211", "bad To"),
            PermanentProviderError,
            "21211",
            None,
            "bad To",
        ),
        (401, {"Retry-After": "9"}, ProviderFault(), PermanentProviderError, "401", None, None),
        # The provider's code decides over the status where the reader says so.
        (
            400,
            {"Retry-After": "3"},
            ProviderFault("130429", "rate", Verdict.THROTTLED),
            RetryableProviderError,
            "130429",
            3.0,
            "rate",
        ),
        (
            400,
            {},
            ProviderFault("1", "", Verdict.TRANSIENT),
            RetryableProviderError,
            "1",
            None,
            None,
        ),
        (
            429,
            {"Retry-After": "3"},
            ProviderFault("131047", "window", Verdict.PERMANENT),
            PermanentProviderError,
            "131047",
            None,
            "window",
        ),
        (
            400,
            {},
            ProviderFault("21610", "unsubscribed", Verdict.OPTED_OUT),
            RecipientOptedOut,
            "21610",
            None,
            "unsubscribed",
        ),
    ],
)
def test_the_shared_mapping(
    status: int,
    headers: dict[str, str],
    fault: ProviderFault,
    kind: type[ProviderError],
    code: str,
    retry_after: float | None,
    reason: str | None,
) -> None:
    err = provider_failure(HttpAnswer(status, {}, headers), fixed(fault), "Acme")
    assert type(err) is kind
    assert err.code == code
    assert err.reason == (reason or f"Acme answered HTTP {status}")
    if isinstance(err, RetryableProviderError):
        assert err.retry_after == retry_after


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    later = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    earlier = format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)
    assert retry_after_seconds({"Retry-After": later}, now=lambda: NOW) == 30.0
    assert retry_after_seconds({"Retry-After": earlier}, now=lambda: NOW) == 0.0
    assert retry_after_seconds({}, now=lambda: NOW) is None


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (TimeoutError(), "TIMEOUT"),
        (aiohttp.ServerTimeoutError(), "TIMEOUT"),
        (aiohttp.ClientConnectionError(), "NETWORK"),
        (aiohttp.ServerDisconnectedError(), "NETWORK"),
    ],
)
def test_no_answer_at_all_is_transient(exc: BaseException, code: str) -> None:
    err = network_failure(exc)
    assert isinstance(err, RetryableProviderError)
    assert err.code == code


def test_a_reader_without_details_leaves_the_status_to_decide() -> None:
    err = provider_failure(HttpAnswer(403, "<html>no</html>", {}), no_details, "Acme")
    assert isinstance(err, PermanentProviderError)
    assert (err.code, err.reason) == ("403", "Acme answered HTTP 403")


# -- every HTTP adapter routes its answers through the one mapping ----------------------

TOKEN = "route-test-token"
ENV = {"TOKEN": TOKEN, "SECRET": "route-secret", "VERIFY": "route-verify"}


def _twilio(fake: FakeProviderServer) -> ChannelAdapter:
    settings = {"account_sid": "AC" + "0" * 32, "auth_token_env": "TOKEN", "base_url": fake.url}
    return TwilioSmsAdapter(
        Channel("sms", "SMS", "twilio", lane="+15005550006", settings=settings), _ctx()
    )


def _whatsapp(fake: FakeProviderServer) -> ChannelAdapter:
    settings = {
        "phone_number_id": PHONE_NUMBER_ID,
        "access_token_env": "TOKEN",
        "app_secret_env": "SECRET",
        "verify_token_env": "VERIFY",
        "base_url": fake.url,
    }
    return WhatsAppCloudAdapter(Channel("wa", "WHATSAPP", "whatsapp", settings=settings), _ctx())


def _rbm(fake: FakeProviderServer) -> ChannelAdapter:
    settings = {
        "agent_id": "agent",
        "token_env": "TOKEN",
        "client_token_env": "SECRET",
        "base_url": fake.url,
    }
    return RbmAdapter(Channel("rcs", "RCS", "rbm", settings=settings), _ctx())


def _ctx() -> AdapterContext:
    return AdapterContext("https://hub.example.com", loopback_http(), env=ENV)


ADAPTERS: dict[
    str, tuple[Callable[..., FakeProviderServer], Callable[..., ChannelAdapter], Any]
] = {
    "twilio": (lambda b, **kw: FakeTwilio(b, auth_token=TOKEN, **kw), _twilio, twilio_fault),
    "whatsapp": (lambda b, **kw: FakeWhatsApp(b, access_token=TOKEN, **kw), _whatsapp, meta_fault),
    "rbm": (lambda b, **kw: FakeRbm(b, token=TOKEN, agent_id="agent", **kw), _rbm, google_fault),
}


@asynccontextmanager
async def sending(provider: str, behaviour: Behaviour, **kw: Any) -> AsyncIterator[ChannelAdapter]:
    make_fake, make_adapter, _ = ADAPTERS[provider]
    async with make_fake(behaviour, **kw) as fake:
        adapter = make_adapter(fake)
        try:
            yield adapter
        finally:
            await adapter.close()


def text_delivery() -> Delivery:
    content = MessageContent(type="text", text="hello")
    return Delivery("m-1", "t", "c", "+16505551234", "text", "hello", content, 1)


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
async def test_each_adapter_maps_its_answers_through_the_shared_function(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[HttpAnswer, ProviderError]] = []
    real = provider_http.provider_failure

    def spy(answer: HttpAnswer, read_error: Any, name: str) -> ProviderError:
        err = real(answer, read_error, name)
        seen.append((answer, err))
        return err

    monkeypatch.setattr(provider_http, "provider_failure", spy)
    async with sending(provider, Behaviour.THROTTLED, retry_after=7) as adapter:
        with pytest.raises(RetryableProviderError) as caught:
            await adapter.send(text_delivery())
    print(f"\n{provider}: {caught.value.code} {caught.value.reason} {caught.value.retry_after}")
    assert len(seen) == 1
    answer, mapped = seen[0]
    assert answer.status == 429
    assert caught.value is mapped
    # The same 429 with Retry-After gives every provider the same outcome.
    assert caught.value.retry_after == 7.0
    # ... and the adapter's reader is the one the mapping was given.
    _, _, reader = ADAPTERS[provider]
    assert mapped.code == (reader(answer).code or "429")


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
async def test_each_adapter_retries_a_server_error(provider: str) -> None:
    async with sending(provider, Behaviour.FLAKY) as adapter:
        with pytest.raises(RetryableProviderError) as caught:
            await adapter.send(text_delivery())
        accepted = await adapter.send(text_delivery())
    print(f"\n{provider}: {caught.value.code} {caught.value.reason}")
    assert accepted.provider_message_id
