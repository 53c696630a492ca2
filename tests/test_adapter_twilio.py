"""The Twilio SMS adapter against a fake Twilio on loopback, field by field."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from adapters.base import (
    AdapterContext,
    CallbackRejected,
    CallbackRequest,
    CallbackResult,
    PermanentProviderError,
    Receipt,
    RetryableProviderError,
)
from adapters.twilio import EMPTY_TWIML, TwilioSmsAdapter, twilio_signature
from fakes.server import Behaviour
from fakes.twilio import FakeTwilio
from server.domain.content import parse_content
from server.domain.models import Channel, Delivery
from server.domain.provider import RecipientOptedOut
from server.domain.status import DeliveryStatus
from support.net import loopback_http

ACCOUNT_SID = "AC" + "5" * 32
TOKEN = "tw-secret-7f3a9c"  # distinctive, so a leak is easy to spot
TOKEN_VAR = "TWILIO_TEST_TOKEN"
CHANNEL_ID = "sms-twilio"
LANE = "+15005550006"
DEST = "+447700900123"

# Twilio's documented example: twilio-python tests/unit/test_request_validator.py
# (the same vector as the twilio-php "Validate Incoming Requests" guide).
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


class Hub:
    """Stands in for the gateway: turns Twilio's calls into CallbackRequests."""

    def __init__(self) -> None:
        self.adapter: TwilioSmsAdapter | None = None
        self.results: list[CallbackResult] = []
        self.rejected: list[CallbackRejected] = []
        self.app = web.Application()
        self.app.router.add_post("/callbacks/{channel_id}", self._callback)
        self._runner = web.AppRunner(self.app)
        self.url = ""

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _callback(self, request: web.Request) -> web.Response:
        assert self.adapter is not None
        body = await request.read()
        form = {k: str(v) for k, v in (await request.post()).items()}
        cb = CallbackRequest(
            method=request.method,
            url=self.url + request.path_qs,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
            body=body,
            form=form,
        )
        try:
            result = await self.adapter.handle_callback(cb)
        except CallbackRejected as exc:
            self.rejected.append(exc)
            return web.Response(status=exc.status)
        self.results.append(result)
        return web.Response(
            status=result.status, body=result.body, content_type=result.content_type
        )


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = Hub()
    await h.start()
    yield h
    await h.stop()


def make_channel(base_url: str, **extra: str) -> Channel:
    settings = {
        "account_sid": ACCOUNT_SID,
        "auth_token_env": TOKEN_VAR,
        "base_url": base_url,
        "timeout_seconds": "0.5",
        **extra,
    }
    return Channel(CHANNEL_ID, "SMS", "twilio", lane=LANE, settings=settings)


def make_adapter(hub: Hub, base_url: str, *, token: str = TOKEN, **extra: str) -> TwilioSmsAdapter:
    ctx = AdapterContext(public_url=hub.url, fetcher=loopback_http(), env={TOKEN_VAR: token})
    adapter = TwilioSmsAdapter(make_channel(base_url, **extra), ctx)
    hub.adapter = adapter
    return adapter


def delivery(
    text: str = "Your code is 123456", to: str = DEST, extra: dict[str, Any] | None = None
) -> Delivery:
    return Delivery(
        message_id="m-1",
        tenant_id="t-1",
        channel_id=CHANNEL_ID,
        destination=to,
        type="text",
        text=text,
        content=parse_content({"type": "text", "text": text, **(extra or {})}),
        attempt=1,
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TOKEN) as f:
        yield f


@pytest.fixture
async def adapter(hub: Hub, fake: FakeTwilio) -> AsyncIterator[TwilioSmsAdapter]:
    a = make_adapter(hub, fake.url)
    yield a
    await a.close()


def assert_no_token(*things: object) -> None:
    for thing in things:
        assert TOKEN not in str(thing)
        assert TOKEN not in repr(thing)


# -- sending ---------------------------------------------------------------


async def test_send_posts_twilio_form_with_basic_auth(
    adapter: TwilioSmsAdapter, fake: FakeTwilio, hub: Hub
) -> None:
    accepted = await adapter.send(delivery())

    [req] = fake.requests
    assert req.method == "POST"
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert req.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    scheme, _, value = req.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == f"{ACCOUNT_SID}:{TOKEN}"
    assert req.form == {
        "To": DEST,
        "From": LANE,
        "Body": "Your code is 123456",
        "StatusCallback": f"{hub.url}/callbacks/{CHANNEL_ID}",
    }
    [sid] = fake.messages
    assert accepted.provider_message_id == sid
    assert sid.startswith("SM") and len(sid) == 34
    assert accepted.segments == 1


async def test_the_form_carries_any_text_as_written(
    adapter: TwilioSmsAdapter, fake: FakeTwilio
) -> None:
    text = "Tom & Jerry: 50% off+more=yes? Grüße, 😀 #1 /a?b=c"
    await adapter.send(delivery(text))
    assert fake.requests[0].form["Body"] == text


async def test_batch_sender_overrides_the_lane(adapter: TwilioSmsAdapter, fake: FakeTwilio) -> None:
    await adapter.send(delivery(extra={"from": "ACME", "options": {"x": 1}}))
    assert fake.requests[0].form["From"] == "ACME"


async def test_messaging_service_picks_the_sender(hub: Hub, fake: FakeTwilio) -> None:
    service = "MG" + "a" * 32
    adapter = make_adapter(hub, fake.url, messaging_service_sid=service)
    try:
        await adapter.send(delivery())
        form = fake.requests[0].form
        assert form["MessagingServiceSid"] == service
        assert "From" not in form
        await adapter.send(delivery(extra={"from": "+15005550001"}))
        assert fake.requests[1].form["From"] == "+15005550001"
    finally:
        await adapter.close()


async def test_no_sender_at_all_is_permanent(hub: Hub, fake: FakeTwilio) -> None:
    ctx = AdapterContext(public_url=hub.url, fetcher=loopback_http(), env={TOKEN_VAR: TOKEN})
    channel = Channel(
        CHANNEL_ID, "SMS", "twilio", lane="", settings=make_channel(fake.url).settings
    )
    adapter = TwilioSmsAdapter(channel, ctx)
    with pytest.raises(PermanentProviderError) as caught:
        await adapter.send(delivery())
    assert caught.value.code == "NO_SENDER"
    assert fake.requests == []
    await adapter.close()


@pytest.mark.parametrize(
    "text,expected",
    [("a" * 160, 1), ("a" * 161, 2), ("€" * 81, 2), ("ж" * 70, 1), ("ж" * 71, 2), ("hi 😀", 1)],
)
async def test_segments_are_counted_from_the_text(
    adapter: TwilioSmsAdapter, fake: FakeTwilio, text: str, expected: int
) -> None:
    accepted = await adapter.send(delivery(text))
    assert accepted.segments == expected
    assert fake.messages[accepted.provider_message_id].num_segments == expected


async def test_throttled_is_retryable_with_retry_after(hub: Hub) -> None:
    async with FakeTwilio(
        Behaviour.THROTTLED, account_sid=ACCOUNT_SID, auth_token=TOKEN, retry_after=7
    ) as fake:
        adapter = make_adapter(hub, fake.url)
        with pytest.raises(RetryableProviderError) as caught:
            await adapter.send(delivery())
        assert caught.value.code == "20429"
        assert caught.value.retry_after == 7.0
        assert caught.value.reason == "Too Many Requests"
        assert (await adapter.send(delivery())).provider_message_id in fake.messages
        await adapter.close()


async def test_flaky_is_retryable_then_accepted(hub: Hub) -> None:
    async with FakeTwilio(Behaviour.FLAKY, account_sid=ACCOUNT_SID, auth_token=TOKEN) as fake:
        adapter = make_adapter(hub, fake.url)
        with pytest.raises(RetryableProviderError) as caught:
            await adapter.send(delivery())
        assert caught.value.code == "20503"
        accepted = await adapter.send(delivery())
        assert accepted.provider_message_id in fake.messages
        assert len(fake.requests) == 2
        await adapter.close()


async def test_black_hole_times_out_within_the_channel_timeout(hub: Hub) -> None:
    async with FakeTwilio(Behaviour.BLACK_HOLE, account_sid=ACCOUNT_SID, auth_token=TOKEN) as fake:
        adapter = make_adapter(hub, fake.url)  # timeout_seconds = 0.5
        started = time.monotonic()
        with pytest.raises(RetryableProviderError) as caught:
            await adapter.send(delivery())
        elapsed = time.monotonic() - started
        assert caught.value.code == "TIMEOUT"
        assert 0.4 <= elapsed < 2.0
        await adapter.close()


async def test_rejecting_is_permanent_with_twilio_code(hub: Hub) -> None:
    async with FakeTwilio(Behaviour.REJECTING, account_sid=ACCOUNT_SID, auth_token=TOKEN) as fake:
        adapter = make_adapter(hub, fake.url)
        with pytest.raises(PermanentProviderError) as caught:
            await adapter.send(delivery())
        assert caught.value.code == "21610"
        assert caught.value.reason == "Attempt to send to unsubscribed recipient"
        # The hub records this one in its consent ledger.
        assert isinstance(caught.value, RecipientOptedOut)
        assert_no_token(caught.value)
        await adapter.close()


async def test_invalid_to_is_permanent_21211(adapter: TwilioSmsAdapter) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        await adapter.send(delivery(to="07700900123"))
    assert caught.value.code == "21211"
    assert "not a valid phone number" in caught.value.reason
    assert not isinstance(caught.value, RecipientOptedOut)


async def test_empty_body_is_permanent_21602(adapter: TwilioSmsAdapter) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        await adapter.send(delivery(""))
    assert caught.value.code == "21602"


async def test_wrong_token_is_permanent_20003_without_leaking(hub: Hub, fake: FakeTwilio) -> None:
    wrong = "tw-wrong-0000"
    adapter = make_adapter(hub, fake.url, token=wrong)
    with pytest.raises(PermanentProviderError) as caught:
        await adapter.send(delivery())
    assert caught.value.code == "20003"
    for leak in (wrong, TOKEN):
        assert leak not in str(caught.value) and leak not in caught.value.reason
    assert wrong not in repr(adapter)
    await adapter.close()


async def test_unreachable_twilio_is_retryable(hub: Hub) -> None:
    adapter = make_adapter(hub, "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(RetryableProviderError) as caught:
        await adapter.send(delivery())
    assert caught.value.code in ("NETWORK", "TIMEOUT")
    assert_no_token(caught.value)
    await adapter.close()


# -- settings and secrets --------------------------------------------------


def test_repr_never_shows_the_token(adapter: TwilioSmsAdapter) -> None:
    assert_no_token(adapter)
    assert ACCOUNT_SID in repr(adapter)
    assert_no_token(vars(adapter))


@pytest.mark.parametrize("missing", ["account_sid", "auth_token_env"])
def test_missing_settings_are_named(missing: str, hub: Hub) -> None:
    settings = dict(make_channel("http://x").settings)
    del settings[missing]
    channel = Channel(CHANNEL_ID, "SMS", "twilio", lane=LANE, settings=settings)
    ctx = AdapterContext(public_url=hub.url, fetcher=loopback_http(), env={TOKEN_VAR: TOKEN})
    with pytest.raises(ValueError, match=missing):
        TwilioSmsAdapter(channel, ctx)


def test_unset_token_variable_is_refused(hub: Hub) -> None:
    ctx = AdapterContext(public_url=hub.url, fetcher=loopback_http(), env={})
    with pytest.raises(ValueError, match=TOKEN_VAR):
        TwilioSmsAdapter(make_channel("http://x"), ctx)


# -- signatures --------------------------------------------------------------


def test_documented_signature_vector() -> None:
    assert twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE


def doc_request(
    url: str = DOC_URL, params: dict[str, str] | None = None, signature: str | None = DOC_SIGNATURE
) -> CallbackRequest:
    headers = {} if signature is None else {"x-twilio-signature": signature}
    return CallbackRequest("POST", url, headers, {}, b"", dict(params or DOC_PARAMS))


def doc_adapter(hub: Hub, token: str = DOC_TOKEN) -> TwilioSmsAdapter:
    ctx = AdapterContext(public_url=hub.url, fetcher=loopback_http(), env={TOKEN_VAR: token})
    return TwilioSmsAdapter(make_channel("http://x"), ctx)


async def test_documented_vector_passes_handle_callback(hub: Hub) -> None:
    # A signed voice webhook: verified, nothing to report, 2xx so Twilio stops.
    result = await doc_adapter(hub).handle_callback(doc_request())
    assert result.receipts == () and result.inbound == ()
    assert 200 <= result.status < 300


@pytest.mark.parametrize(
    "url,signature",
    [
        # From the same twilio-python test module: a proxy may add or drop the port.
        ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", DOC_SIGNATURE),
        (DOC_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
        ("http://mycompany.com/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # :80
    ],
)
async def test_port_variants_of_the_documented_vector(hub: Hub, url: str, signature: str) -> None:
    await doc_adapter(hub).handle_callback(doc_request(url, signature=signature))


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p: {**p, "Digits": "1235"}, id="changed-param"),
        pytest.param(lambda p: {**p, "Extra": "1"}, id="added-param"),
        pytest.param(lambda p: {k: v for k, v in p.items() if k != "Digits"}, id="dropped-param"),
    ],
)
async def test_tampered_params_are_rejected(hub: Hub, tamper: Any) -> None:
    with pytest.raises(CallbackRejected) as caught:
        await doc_adapter(hub).handle_callback(doc_request(params=tamper(DOC_PARAMS)))
    assert caught.value.status == 403


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(doc_request(url=DOC_URL.replace("foo=1", "foo=2")), id="other-url"),
        pytest.param(doc_request(signature=None), id="missing-header"),
        pytest.param(doc_request(signature=""), id="empty-header"),
        pytest.param(doc_request(signature=DOC_SIGNATURE.lower()), id="wrong-signature"),
    ],
)
async def test_bad_requests_are_rejected(hub: Hub, request_: CallbackRequest) -> None:
    with pytest.raises(CallbackRejected) as caught:
        await doc_adapter(hub).handle_callback(request_)
    assert caught.value.status == 403


async def test_wrong_token_is_rejected_without_leaking(hub: Hub) -> None:
    with pytest.raises(CallbackRejected) as caught:
        await doc_adapter(hub, token=TOKEN).handle_callback(doc_request())
    assert_no_token(caught.value, caught.value.reason)


# -- status callbacks --------------------------------------------------------


async def test_delivered_callback_end_to_end(
    adapter: TwilioSmsAdapter, fake: FakeTwilio, hub: Hub
) -> None:
    accepted = await adapter.send(delivery())
    status = await fake.deliver(accepted.provider_message_id, "delivered")
    assert 200 <= status < 300
    [result] = hub.results
    assert result.receipts == (Receipt(accepted.provider_message_id, DeliveryStatus.DELIVERED),)
    assert result.inbound == ()


async def test_failed_callback_carries_error_code(
    adapter: TwilioSmsAdapter, fake: FakeTwilio, hub: Hub
) -> None:
    accepted = await adapter.send(delivery())
    await fake.deliver(accepted.provider_message_id, "undelivered", error_code="30003")
    [receipt] = hub.results[0].receipts
    assert receipt.status is DeliveryStatus.UNDELIVERED
    assert "30003" in receipt.reason


async def test_forged_callback_is_refused_over_http(
    adapter: TwilioSmsAdapter, fake: FakeTwilio, hub: Hub
) -> None:
    accepted = await adapter.send(delivery())
    url = fake.messages[accepted.provider_message_id].status_callback
    params = {"MessageSid": accepted.provider_message_id, "MessageStatus": "delivered"}
    status, _, _ = await fake.post_signed(url, params, token="not-the-token")
    assert status == 403
    assert hub.results == [] and len(hub.rejected) == 1


def signed(adapter_url: str, params: dict[str, str], token: str = TOKEN) -> CallbackRequest:
    sig = twilio_signature(token, adapter_url, params)
    return CallbackRequest("POST", adapter_url, {"x-twilio-signature": sig}, {}, b"", params)


@pytest.mark.parametrize(
    "twilio_status,expected",
    [
        ("queued", None),
        ("accepted", None),
        ("sending", None),
        ("sent", DeliveryStatus.SUBMITTED),
        ("delivered", DeliveryStatus.DELIVERED),
        ("undelivered", DeliveryStatus.UNDELIVERED),
        ("failed", DeliveryStatus.FAILED),
        ("read", DeliveryStatus.READ),
        ("something_new", None),
    ],
)
async def test_message_status_mapping(
    adapter: TwilioSmsAdapter, hub: Hub, twilio_status: str, expected: DeliveryStatus | None
) -> None:
    url = f"{hub.url}/callbacks/{CHANNEL_ID}"
    sid = "SM" + "b" * 32
    params = {
        "AccountSid": ACCOUNT_SID,
        "From": LANE,
        "MessageSid": sid,
        "MessageStatus": twilio_status,
        "SmsSid": sid,
        "SmsStatus": twilio_status,
        "To": DEST,
    }
    if twilio_status == "failed":
        params |= {"ErrorCode": "30008", "ErrorMessage": "Unknown error"}
    result = await adapter.handle_callback(signed(url, params))
    assert 200 <= result.status < 300 and result.body == b""
    if expected is None:
        assert result.receipts == ()
    else:
        [receipt] = result.receipts
        assert receipt.provider_message_id == sid
        assert receipt.status is expected
        if twilio_status == "failed":
            assert receipt.reason == "30008: Unknown error"


# -- inbound -----------------------------------------------------------------


async def test_inbound_sms_end_to_end(
    adapter: TwilioSmsAdapter, fake: FakeTwilio, hub: Hub
) -> None:
    params = fake.inbound_params(DEST, LANE, "STOP please ❤")
    status, ctype, body = await fake.post_signed(f"{hub.url}/callbacks/{CHANNEL_ID}", params)
    assert status == 200
    assert ctype == "text/xml"
    assert body.encode() == EMPTY_TWIML and body.endswith("<Response/>")
    [result] = hub.results
    assert result.receipts == ()
    [msg] = result.inbound
    assert msg.channel_id == CHANNEL_ID
    assert msg.provider_message_id == params["MessageSid"]
    assert msg.from_address == DEST
    assert msg.to_address == LANE
    assert msg.type == "text"
    assert msg.text == "STOP please ❤"
    assert msg.raw["SmsStatus"] == "received"


async def test_inbound_mms_keeps_the_first_attachment(
    adapter: TwilioSmsAdapter, fake: FakeTwilio, hub: Hub
) -> None:
    media = (
        ("https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM1/Media/ME1", "image/jpeg"),
        ("https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM1/Media/ME2", "video/mp4"),
    )
    params = fake.inbound_params(DEST, LANE, "look", media=media)
    result = await adapter.handle_callback(signed(f"{hub.url}/callbacks/{CHANNEL_ID}", params))
    [msg] = result.inbound
    assert msg.type == "image"
    assert msg.media_url == media[0][0]
    assert msg.mime_type == "image/jpeg"
    assert msg.caption == "look" and msg.text == "look"
    assert msg.raw["MediaUrl1"] == media[1][0]


async def test_no_secret_in_logs(
    adapter: TwilioSmsAdapter, fake: FakeTwilio, hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    accepted = await adapter.send(delivery())
    await fake.deliver(accepted.provider_message_id, "failed")
    assert TOKEN not in caplog.text
