"""WhatsApp Cloud API adapter against a fake of Meta's Graph API on loopback.

Every message type is checked field by field where Meta would read it: in the
request body the fake received. Webhooks are built and signed as Meta sends them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.base import (
    AdapterContext,
    CallbackRejected,
    CallbackRequest,
    Delivery,
    InboundMessage,
    PermanentProviderError,
    Receipt,
    RetryableProviderError,
)
from adapters.provider_http import HttpAnswer, provider_failure
from adapters.whatsapp import DEFAULT_API_VERSION, WhatsAppCloudAdapter, meta_fault
from adapters.whatsapp_webhook import verify_signature
from fakes.server import Behaviour
from fakes.whatsapp import (
    DISPLAY_PHONE_NUMBER,
    PHONE_NUMBER_ID,
    FakeWhatsApp,
    image_message,
    inbound_payload,
    meta_error,
    signed_callback,
    status,
    status_error,
    statuses_payload,
    text_message,
    user_message,
    verification_request,
)
from server.domain.content import parse_content
from server.domain.models import Channel
from server.domain.sending import SingleSend, canonical_content
from server.domain.status import DeliveryStatus
from support.net import loopback_http

TOKEN = "EAAG-test-access-token"
APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
ENV = {"WA_ACCESS_TOKEN": TOKEN, "WA_APP_SECRET": APP_SECRET, "WA_VERIFY_TOKEN": VERIFY_TOKEN}
CHANNEL_ID = "wa-main"
CUSTOMER = "+16505551234"
SEED = json.loads((Path(__file__).parent / "seeds" / "outbound_msg.json").read_text())
# The parts of a seed-002 OutBoundMsg that the API hands to planning as content.
SEED_PARTS = ("audio", "document", "image", "video", "location", "template", "text", "options")


def make_adapter(base_url: str, **settings: Any) -> WhatsAppCloudAdapter:
    channel = Channel(
        CHANNEL_ID,
        "WHATSAPP",
        "whatsapp_cloud",
        settings={
            "phone_number_id": PHONE_NUMBER_ID,
            "access_token_env": "WA_ACCESS_TOKEN",
            "app_secret_env": "WA_APP_SECRET",
            "verify_token_env": "WA_VERIFY_TOKEN",
            "base_url": base_url,
            "timeout_seconds": 5,
            **settings,
        },
    )
    ctx = AdapterContext(public_url="https://hub.example.com", fetcher=loopback_http(), env=ENV)
    return WhatsAppCloudAdapter(channel, ctx)


@asynccontextmanager
async def running(
    behaviour: Behaviour = Behaviour.HAPPY, *, settings: Mapping[str, Any] | None = None, **kw: Any
) -> AsyncIterator[tuple[FakeWhatsApp, WhatsAppCloudAdapter]]:
    fake = FakeWhatsApp(behaviour, access_token=TOKEN, **kw)
    await fake.start()
    adapter = make_adapter(fake.url, **(settings or {}))
    try:
        yield fake, adapter
    finally:
        await adapter.close()
        await fake.stop()


def delivery(content: Mapping[str, Any], destination: str = CUSTOMER) -> Delivery:
    return Delivery(
        message_id="msg-1",
        tenant_id="tenant-1",
        channel_id=CHANNEL_ID,
        destination=destination,
        type=str(content.get("type", "text")),
        text=str(content.get("text", "")),
        content=parse_content(content),
        attempt=1,
    )


def seed_content(kind: str, **changes: Any) -> dict[str, Any]:
    """Seed 002 as the platform normalises it for a single send of the given type."""
    parts = {k: SEED[k] for k in SEED_PARTS}
    parts.update(changes)
    if kind != "text" or "options" not in changes:
        parts.pop("options")  # buttons only where a test asks for them
    return canonical_content(
        SingleSend(channel_id=CHANNEL_ID, type=kind, to={"phone": CUSTOMER}, content=parts)
    )


async def sent_body(content: Mapping[str, Any]) -> dict[str, Any]:
    """Send content through the adapter; return what the fake received."""
    async with running() as (fake, adapter):
        accepted = await adapter.send(delivery(content))
        assert len(fake.requests) == 1
        rec = fake.requests[0]
        assert rec.method == "POST"
        assert rec.path == f"/{DEFAULT_API_VERSION}/{PHONE_NUMBER_ID}/messages"
        assert rec.headers["Authorization"] == f"Bearer {TOKEN}"
        assert rec.headers["Content-Type"].startswith("application/json")
        assert accepted.provider_message_id.startswith("wamid.")
        assert fake.accepted == [(accepted.provider_message_id, rec.json)]
        return rec.json


def envelope(kind: str, part: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505551234",
        "type": kind,
        kind: part,
    }


# --- sending, type by type --------------------------------------------------------------


async def test_text_with_a_link_asks_for_a_preview() -> None:
    text = "Your order shipped: https://shop.example.com/o/42"
    body = await sent_body({"type": "text", "text": text})
    assert body == envelope("text", {"preview_url": True, "body": text})


async def test_text_from_seed_without_a_link_has_no_preview() -> None:
    body = await sent_body(seed_content("text"))
    assert body == envelope("text", {"preview_url": False, "body": "your-text-message-content"})


@pytest.mark.parametrize(
    ("kind", "wa_type", "expected"),
    [
        ("image", "image", {"link": "https://cdn.example.com/a.png", "caption": "A caption"}),
        ("video", "video", {"link": "https://cdn.example.com/a.mp4", "caption": "A caption"}),
        (
            "document",
            "document",
            {
                "link": "https://cdn.example.com/a.pdf",
                "caption": "A caption",
                "filename": "invoice-42.pdf",
            },
        ),
        # Meta's audio object takes neither caption nor filename; voice goes out as audio.
        ("audio", "audio", {"link": "https://cdn.example.com/a.ogg"}),
        ("voice", "audio", {"link": "https://cdn.example.com/a.ogg"}),
    ],
)
async def test_media_by_link(kind: str, wa_type: str, expected: dict[str, str]) -> None:
    part = {"link": expected["link"], "caption": "A caption", "filename": "invoice-42.pdf"}
    content = seed_content(kind, **{"audio" if kind == "voice" else kind: part})
    body = await sent_body(content)
    assert body == envelope(wa_type, expected)


async def test_batch_media_uses_media_content_url() -> None:
    content = {"type": "image", "mediaContentUrl": "https://cdn.example.com/b.jpg", "from": "x"}
    assert await sent_body(content) == envelope("image", {"link": "https://cdn.example.com/b.jpg"})


async def test_location_from_seed() -> None:
    body = await sent_body(seed_content("location"))
    # Meta's location object has no url, so the seed's url is not sent.
    assert body == envelope(
        "location",
        {
            "latitude": 12.90909,
            "longitude": 6.90808,
            "name": "Main Building",
            "address": "1 Hacker Way, Menlo Park, CA, 94025",
        },
    )


async def test_contacts_from_seed_card() -> None:
    second = {
        "name": {"first_name": "Ada", "last_name": "Lovelace"},
        "birthday": "1815-12-10",
        "emails": [{"email": "ada@example.com", "type": "WORK"}],
        "urls": [{"url": "https://example.com/ada", "type": "HOME"}],
        "phones": [{"phone": "+44 20 7946 0000", "type": "CELL"}],
    }
    content = seed_content("contacts")
    content["contacts"] = [*SEED["contacts"], second]  # the API passes cards through as given
    body = await sent_body(content)
    assert body == envelope(
        "contacts",
        [
            {
                # Seed 002's card: numbers become strings, the placeholder birthday,
                # the empty email and url and the ims (not a Cloud API field) are dropped.
                "name": {
                    "formatted_name": "John Smith",
                    "first_name": "John",
                    "last_name": "Smith",
                },
                "org": {"company": "WhatsApp", "department": "Design", "title": "Manager"},
                "addresses": [
                    {
                        "street": "1 Hacker Way",
                        "city": "Menlo Park",
                        "state": "CA",
                        "zip": "94025",
                        "country": "United States",
                        "country_code": "us",
                        "type": "HOME",
                    }
                ],
                "phones": [{"phone": "+1 (940) 555-1234", "type": "HOME", "wa_id": "16505551234"}],
            },
            {
                "name": {
                    "formatted_name": "Ada Lovelace",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                },
                "birthday": "1815-12-10",
                "emails": [{"email": "ada@example.com", "type": "WORK"}],
                "phones": [{"phone": "+44 20 7946 0000", "type": "CELL"}],
                "urls": [{"url": "https://example.com/ada", "type": "HOME"}],
            },
        ],
    )


async def test_reply_buttons_from_seed_options() -> None:
    body = await sent_body(seed_content("text", options=SEED["options"]))
    assert body == envelope(
        "interactive",
        {
            "type": "button",
            "body": {"text": "your-text-message-content"},
            "action": {
                "buttons": [{"type": "reply", "reply": {"id": "occupation", "title": "Occupation"}}]
            },
        },
    )


async def test_three_buttons_with_long_titles_cut_to_twenty_characters() -> None:
    buttons = [
        {"code": "yes", "label": "Yes"},
        {"code": "no", "label": "No"},
        {"code": "later", "label": "Remind me about this later"},
    ]
    body = await sent_body(seed_content("text", options={"buttons": buttons}))
    replies = [b["reply"] for b in body["interactive"]["action"]["buttons"]]
    assert replies == [
        {"id": "yes", "title": "Yes"},
        {"id": "no", "title": "No"},
        {"id": "later", "title": "Remind me about this"},
    ]


async def test_four_buttons_fail_permanently_without_a_request() -> None:
    buttons = [{"code": f"b{i}", "label": f"B{i}"} for i in range(4)]
    async with running() as (fake, adapter):
        with pytest.raises(PermanentProviderError) as err:
            await adapter.send(delivery(seed_content("text", options={"buttons": buttons})))
        assert err.value.code == "INVALID_CONTENT"
        assert fake.requests == []


async def test_template_from_seed_sends_data_as_body_parameters_in_order() -> None:
    body = await sent_body(seed_content("template"))
    assert body == envelope(
        "template",
        {
            "name": "feedback",
            "language": {"code": "en_US"},
            "components": [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": "10"}, {"type": "text", "text": "INR"}],
                }
            ],
        },
    )


async def test_template_with_an_explicit_parameter_list() -> None:
    template = {"code": "order_update", "lang": "pt_BR", "data": {"parameters": ["Ana", 42]}}
    body = await sent_body(seed_content("template", template=template))
    assert body["template"] == {
        "name": "order_update",
        "language": {"code": "pt_BR"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "42"}],
            }
        ],
    }


async def test_batch_template_without_data_has_no_components() -> None:
    content = {
        "type": "template",
        "text": "Hello Ana",
        "template": {"id": "t-1", "code": "hello_world", "lang": "en_US"},
    }
    body = await sent_body(content)
    assert body["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


async def test_unsupported_content_type_is_permanent() -> None:
    async with running() as (fake, adapter):
        with pytest.raises(PermanentProviderError) as err:
            await adapter.send(delivery({"type": "carousel"}))
        assert err.value.code == "UNSUPPORTED_TYPE"
        assert fake.requests == []


# --- behaviours --------------------------------------------------------------------------


async def test_throttled_is_retryable_with_retry_after() -> None:
    async with running(Behaviour.THROTTLED, retry_after=7) as (_fake, adapter):
        with pytest.raises(RetryableProviderError) as err:
            await adapter.send(delivery({"type": "text", "text": "hi"}))
        assert err.value.code == "130429"
        assert err.value.retry_after == 7.0
        assert err.value.reason == "(#130429) Rate limit hit"
        accepted = await adapter.send(delivery({"type": "text", "text": "hi"}))
        assert accepted.provider_message_id.startswith("wamid.")


async def test_flaky_is_retryable_then_accepted() -> None:
    async with running(Behaviour.FLAKY, failures=1) as (fake, adapter):
        with pytest.raises(RetryableProviderError) as err:
            await adapter.send(delivery({"type": "text", "text": "hi"}))
        assert err.value.code == "2"
        accepted = await adapter.send(delivery({"type": "text", "text": "hi"}))
        assert accepted.provider_message_id == fake.accepted[0][0]
        assert len(fake.requests) == 2


async def test_black_hole_times_out_as_retryable() -> None:
    async with running(Behaviour.BLACK_HOLE, settings={"timeout_seconds": 0.3}) as (_f, adapter):
        started = time.monotonic()
        with pytest.raises(RetryableProviderError) as err:
            await adapter.send(delivery({"type": "text", "text": "hi"}))
        assert err.value.code == "TIMEOUT"
        assert time.monotonic() - started < 2.0


async def test_rejecting_outside_the_24_hour_window_is_permanent_131047() -> None:
    async with running(Behaviour.REJECTING) as (_fake, adapter):
        with pytest.raises(PermanentProviderError) as err:
            await adapter.send(delivery({"type": "text", "text": "hi"}))
        assert err.value.code == "131047"
        assert err.value.reason == "(#131047) Re-engagement message"


async def test_legacy_470_window_error_is_permanent_470() -> None:
    rejection = (
        400,
        meta_error(
            470,
            "(#470) Message failed to send because more than 24 hours have passed since the "
            "customer last replied to this number",
        ),
    )
    async with running(Behaviour.REJECTING, rejection=rejection) as (_fake, adapter):
        with pytest.raises(PermanentProviderError) as err:
            await adapter.send(delivery({"type": "text", "text": "hi"}))
        assert err.value.code == "470"
        assert err.value.reason.startswith("(#470) Message failed to send")


async def test_wrong_token_is_permanent_190_and_never_echoes_the_token() -> None:
    async with FakeWhatsApp(access_token="some-other-token") as fake:
        adapter = make_adapter(fake.url)
        try:
            with pytest.raises(PermanentProviderError) as err:
                await adapter.send(delivery({"type": "text", "text": "hi"}))
        finally:
            await adapter.close()
    assert err.value.code == "190"
    assert TOKEN not in str(err.value) and TOKEN not in repr(adapter.__dict__)


async def test_fake_refuses_a_malformed_body_with_code_100() -> None:
    # The fake's validation is what makes the field-by-field checks above meaningful.
    async with running() as (fake, adapter):
        with pytest.raises(PermanentProviderError) as err:
            await adapter.send(delivery({"type": "text", "text": "x" * 4097}))
        assert err.value.code == "100"
        assert fake.accepted == []


@pytest.mark.parametrize(
    ("status_code", "body", "headers", "retryable", "code", "retry_after"),
    [
        (400, meta_error(130429, "(#130429) Rate limit hit"), {}, True, "130429", None),
        (400, meta_error(131056, "(#131056) pair rate limit hit"), {}, True, "131056", None),
        (400, meta_error(80007, "(#80007) Rate limit issues"), {}, True, "80007", None),
        (400, meta_error(4, "(#4) Application request limit reached"), {}, True, "4", None),
        (429, {}, {"Retry-After": "3"}, True, "429", 3.0),
        (500, meta_error(131000, "(#131000) Something went wrong"), {}, True, "131000", None),
        (400, meta_error(1, "An unknown error occurred"), {}, True, "1", None),
        (503, meta_error(2, "(#2) Service temporarily unavailable"), {}, True, "2", None),
        (502, "<html>Bad Gateway</html>", {}, True, "502", None),
        (400, meta_error(131047, "(#131047) Re-engagement message"), {}, False, "131047", None),
        (400, meta_error(470, "(#470) Re-engagement"), {}, False, "470", None),
        (400, meta_error(131026, "(#131026) Message Undeliverable."), {}, False, "131026", None),
        (400, meta_error(100, "(#100) Invalid parameter"), {}, False, "100", None),
        (401, meta_error(190, "Error validating access token"), {}, False, "190", None),
        (403, meta_error(10, "(#10) Permission denied"), {}, False, "10", None),
        (404, "", {}, False, "404", None),
    ],
)
def test_error_mapping(
    status_code: int,
    body: Any,
    headers: dict[str, str],
    retryable: bool,
    code: str,
    retry_after: float | None,
) -> None:
    answer = HttpAnswer(status_code, body, headers)
    err = provider_failure(answer, meta_fault, "WhatsApp Cloud API")
    assert isinstance(err, RetryableProviderError if retryable else PermanentProviderError)
    assert err.code == code
    if isinstance(body, dict) and "error" in body:
        assert err.reason == body["error"]["message"]
    if isinstance(err, RetryableProviderError):
        assert err.retry_after == retry_after


def test_missing_credentials_fail_at_construction() -> None:
    channel = Channel(
        CHANNEL_ID,
        "WHATSAPP",
        "whatsapp_cloud",
        settings={"phone_number_id": PHONE_NUMBER_ID, "access_token_env": "WA_ACCESS_TOKEN"},
    )
    ctx = AdapterContext(public_url="https://hub.example.com", fetcher=loopback_http(), env=ENV)
    with pytest.raises(ValueError, match="app_secret_env"):
        WhatsAppCloudAdapter(channel, ctx)


# --- webhook: handshake and signature -------------------------------------------------------


@pytest.fixture
async def adapter() -> AsyncIterator[WhatsAppCloudAdapter]:
    # Webhooks never touch the network; the base URL is never called.
    wa = make_adapter("http://127.0.0.1:9")
    yield wa
    await wa.close()


async def test_handshake_echoes_the_challenge(adapter: WhatsAppCloudAdapter) -> None:
    result = await adapter.handle_callback(verification_request(VERIFY_TOKEN, "1158201444"))
    assert (result.status, result.body, result.content_type) == (200, b"1158201444", "text/plain")
    assert result.receipts == () and result.inbound == ()


@pytest.mark.parametrize(
    ("token", "mode"), [("wrong-token", "subscribe"), (VERIFY_TOKEN, "unsubscribe"), ("", "")]
)
async def test_handshake_refuses_a_wrong_token_or_mode(
    adapter: WhatsAppCloudAdapter, token: str, mode: str
) -> None:
    with pytest.raises(CallbackRejected) as err:
        await adapter.handle_callback(verification_request(token, mode=mode))
    assert err.value.status == 403


def test_signature_scheme_matches_an_independent_hmac() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    secret = "fixed-app-secret"
    hex_digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert verify_signature(body, f"sha256={hex_digest}", secret)
    # A published vector for the same scheme: HMAC-SHA256("test", key "secret").
    known = "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
    assert verify_signature(b"test", f"sha256={known}", "secret")
    assert not verify_signature(body + b" ", f"sha256={hex_digest}", secret)
    assert not verify_signature(body, f"sha256={hex_digest}", "another-secret")
    assert not verify_signature(body, hex_digest, secret)  # the sha256= prefix is part of it
    assert not verify_signature(body, f"sha1={hex_digest}", secret)


async def test_valid_signature_accepted_with_a_quick_empty_200(
    adapter: WhatsAppCloudAdapter,
) -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = CallbackRequest(
        "POST",
        "https://hub.example.com/callbacks/wa-main",
        {"x-hub-signature-256": signature},
        {},
        body,
    )
    result = await adapter.handle_callback(request)
    assert (result.status, result.receipts, result.inbound) == (200, (), ())


async def test_tampered_body_is_rejected(adapter: WhatsAppCloudAdapter) -> None:
    signed = signed_callback(inbound_payload(text_message("hello")), APP_SECRET)
    tampered = signed.body.replace(b"hello", b"hellO")
    request = CallbackRequest(signed.method, signed.url, signed.headers, {}, tampered)
    with pytest.raises(CallbackRejected) as err:
        await adapter.handle_callback(request)
    assert err.value.status == 403


async def test_signature_with_another_secret_is_rejected(adapter: WhatsAppCloudAdapter) -> None:
    with pytest.raises(CallbackRejected) as err:
        await adapter.handle_callback(signed_callback(statuses_payload(), "not-the-app-secret"))
    assert err.value.status == 403


async def test_missing_signature_is_rejected(adapter: WhatsAppCloudAdapter) -> None:
    signed = signed_callback(statuses_payload(), APP_SECRET)
    request = CallbackRequest(
        "POST", signed.url, {"content-type": "application/json"}, {}, signed.body
    )
    with pytest.raises(CallbackRejected) as err:
        await adapter.handle_callback(request)
    assert err.value.status == 401


# --- webhook: statuses and inbound messages --------------------------------------------------


async def test_statuses_become_receipts(adapter: WhatsAppCloudAdapter) -> None:
    payload = statuses_payload(
        status("wamid.A", "sent", timestamp=1750857384),
        status("wamid.A", "delivered", timestamp=1750857390),
        status("wamid.A", "read", timestamp=1750857400),
        status(
            "wamid.B",
            "failed",
            timestamp=1750857500,
            errors=[status_error(131026, "Message undeliverable")],
        ),
    )
    result = await adapter.handle_callback(signed_callback(payload, APP_SECRET))
    assert result.status == 200
    assert result.receipts == (
        Receipt("wamid.A", DeliveryStatus.SUBMITTED, "", 1750857384000),
        Receipt("wamid.A", DeliveryStatus.DELIVERED, "", 1750857390000),
        Receipt("wamid.A", DeliveryStatus.READ, "", 1750857400000),
        Receipt("wamid.B", DeliveryStatus.FAILED, "131026: Message undeliverable", 1750857500000),
    )
    assert result.inbound == ()


async def test_inbound_text_and_image_carry_the_profile_name(
    adapter: WhatsAppCloudAdapter,
) -> None:
    text = text_message(
        "Does it come in another color?", message_id="wamid.T", timestamp=1749416383
    )
    image = image_message(
        "1013859600285441", caption="This one", message_id="wamid.I", timestamp=1749416390
    )
    result = await adapter.handle_callback(
        signed_callback(inbound_payload(text, image, profile_name="Sheena Nelson"), APP_SECRET)
    )
    assert result.receipts == ()
    assert result.inbound == (
        InboundMessage(
            channel_id=CHANNEL_ID,
            provider_message_id="wamid.T",
            from_address="+16505551234",
            to_address=f"+{DISPLAY_PHONE_NUMBER}",
            type="text",
            text="Does it come in another color?",
            contact_name="Sheena Nelson",
            timestamp=1749416383000,
            raw=text,
        ),
        InboundMessage(
            channel_id=CHANNEL_ID,
            provider_message_id="wamid.I",
            from_address="+16505551234",
            to_address=f"+{DISPLAY_PHONE_NUMBER}",
            type="image",
            media_url="media:1013859600285441",
            mime_type="image/jpeg",
            caption="This one",
            contact_name="Sheena Nelson",
            timestamp=1749416390000,
            raw=image,
        ),
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            user_message(
                "location",
                {
                    "latitude": 37.44216251868683,
                    "longitude": -122.16153582049394,
                    "name": "Philz Coffee",
                    "address": "101 Forest Ave, Palo Alto, CA 94301",
                },
            ),
            {
                "type": "location",
                "latitude": 37.44216251868683,
                "longitude": -122.16153582049394,
                "text": "Philz Coffee, 101 Forest Ave, Palo Alto, CA 94301",
            },
        ),
        (
            user_message(
                "interactive",
                {
                    "type": "button_reply",
                    "button_reply": {"id": "occupation", "title": "Occupation"},
                },
            ),
            {"type": "button", "text": "Occupation"},
        ),
        (
            user_message("button", {"payload": "STOP_PROMOS", "text": "Stop promotions"}),
            {"type": "button", "text": "Stop promotions"},
        ),
        (
            user_message(
                "contacts",
                [{"name": {"formatted_name": "John Smith"}, "phones": [{"phone": "+1 940"}]}],
            ),
            {"type": "contacts", "text": "John Smith"},
        ),
        (
            user_message(
                "audio", {"id": "555", "mime_type": "audio/ogg; codecs=opus", "voice": True}
            ),
            {"type": "voice", "media_url": "media:555", "mime_type": "audio/ogg; codecs=opus"},
        ),
        (
            user_message("sticker", {"id": "777", "mime_type": "image/webp", "animated": False}),
            {"type": "sticker", "media_url": "media:777", "mime_type": "image/webp"},
        ),
    ],
)
async def test_other_inbound_types(
    adapter: WhatsAppCloudAdapter, message: dict[str, Any], expected: dict[str, Any]
) -> None:
    result = await adapter.handle_callback(signed_callback(inbound_payload(message), APP_SECRET))
    [got] = result.inbound
    assert {k: getattr(got, k) for k in expected} == expected
    assert got.contact_name == "Sheena Nelson"
    assert got.from_address == "+16505551234"


async def test_another_numbers_traffic_is_ignored(adapter: WhatsAppCloudAdapter) -> None:
    payload = inbound_payload(text_message("hi"), phone_number_id="999999999999999")
    result = await adapter.handle_callback(signed_callback(payload, APP_SECRET))
    assert result.inbound == () and result.status == 200


async def test_other_methods_are_refused(adapter: WhatsAppCloudAdapter) -> None:
    with pytest.raises(CallbackRejected) as err:
        await adapter.handle_callback(CallbackRequest("PUT", "https://x", {}, {}, b""))
    assert err.value.status == 405
