"""The RBM adapter against a fake RBM API that checks the wire format field by field."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from adapters.base import (
    Accepted,
    AdapterContext,
    AttemptRecord,
    CallbackRejected,
    CallbackRequest,
    Delivery,
    PermanentProviderError,
    Receipt,
    RetryableProviderError,
)
from adapters.rbm import RbmAdapter, rbm_event_id, rbm_message_id
from fakes.providers import HappyProvider
from fakes.rbm import FakeRbm, bare_webhook, pubsub_webhook, sign, user_event, user_message
from fakes.server import Behaviour
from server.domain.content import MessageContent, parse_content
from server.domain.models import Channel
from server.domain.status import DeliveryStatus
from support.net import loopback_http

AGENT = "test_agent"
TOKEN = "test-access-token"
CLIENT_TOKEN = "SJENCPGJESMGUFPY"
ENV = {"RBM_TOKEN": TOKEN, "RBM_CLIENT_TOKEN": CLIENT_TOKEN}
RCS_CHANNEL = "rcs-main"
SMS_CHANNEL = "sms-main"
RCS_USER = "+916304451252"
NO_RCS_USER = "+14155550199"
SEED = json.loads((Path(__file__).parent / "seeds" / "v2_rcs.json").read_text())


@dataclass
class Harness:
    fake: FakeRbm
    adapter: RbmAdapter
    sms: HappyProvider


@asynccontextmanager
async def harness(
    behaviour: Behaviour = Behaviour.HAPPY,
    *,
    failures: int = 1,
    retry_after: int = 2,
    env: Mapping[str, str] = ENV,
    **settings: str,
) -> AsyncIterator[Harness]:
    sms = HappyProvider()
    fake = FakeRbm(
        behaviour,
        token=TOKEN,
        agent_id=AGENT,
        non_capable={NO_RCS_USER},
        failures=failures,
        retry_after=retry_after,
    )
    async with fake:
        ctx = AdapterContext(
            public_url="https://hub.example.com",
            fetcher=loopback_http(),
            adapter_for=lambda channel_id: sms if channel_id == SMS_CHANNEL else None,
            env=dict(env),
        )
        adapter = RbmAdapter(rcs_channel(fake.url, **settings), ctx)
        try:
            yield Harness(fake, adapter, sms)
        finally:
            await adapter.close()


def rcs_channel(base_url: str, **settings: str) -> Channel:
    values = {
        "agent_id": AGENT,
        "token_env": "RBM_TOKEN",
        "client_token_env": "RBM_CLIENT_TOKEN",
        "base_url": base_url,
        "timeout_seconds": "5",
        "sms_fallback_channel": SMS_CHANNEL,
        **settings,
    }
    return Channel(RCS_CHANNEL, "rcs", "rbm", settings=values)


def delivery(
    content: Mapping[str, Any],
    *,
    destination: str = RCS_USER,
    attempt: int = 1,
    message_id: str = "",
    expire_at: int | None = None,
) -> Delivery:
    return Delivery(
        message_id=message_id or str(uuid.uuid4()),
        tenant_id="tenant-1",
        channel_id=RCS_CHANNEL,
        destination=destination,
        type=str(content.get("type", "text")),
        text=str(content.get("text", "")),
        content=parse_content(content),
        attempt=attempt,
        expire_at=expire_at,
    )


def seed_content(**overrides: Any) -> dict[str, Any]:
    """The seed's content as a batch send stores it: content plus from and options."""
    return {**SEED["content"], "from": SEED["from"], "options": SEED["options"], **overrides}


def only_message(fake: FakeRbm) -> dict[str, Any]:
    assert len(fake.messages) == 1, fake.messages
    return fake.messages[0][2]


# ------------------------------------------------------------------ wire format


async def test_text_message_goes_to_agent_messages_with_ids_and_bearer_token() -> None:
    async with harness() as h:
        d = delivery({"type": "text", "text": "Hello John"}, attempt=3)
        accepted = await h.adapter.send(d)

        [request] = h.fake.requests
        assert request.method == "POST"
        assert request.path == f"/v1/phones/{RCS_USER}/agentMessages"
        expected_id = rbm_message_id(d.message_id, 3)
        assert request.query == {"messageId": expected_id, "agentId": AGENT}
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.json == {"contentMessage": {"text": "Hello John"}}
        # What RBM will echo in DELIVERED/READ events is what the platform stores.
        assert accepted == Accepted(expected_id)
        assert h.fake.messages[0][:2] == (RCS_USER, expected_id)


def test_message_ids_are_uuids_per_attempt_and_reproducible() -> None:
    first, again, second = (
        rbm_message_id("m-1", 1),
        rbm_message_id("m-1", 1),
        rbm_message_id("m-1", 2),
    )
    assert first == again != second
    assert uuid.UUID(first) and uuid.UUID(second)
    assert rbm_event_id("m-1", 1) != first


async def test_media_message_is_a_content_info() -> None:
    async with harness() as h:
        await h.adapter.send(
            delivery(
                {
                    "type": "media",
                    "mediaContentUrl": "https://cdn.example.com/promo.mp4",
                    "fileSize": 1212,
                    "thumbnailUrl": "https://cdn.example.com/promo.jpg",
                }
            )
        )
        assert only_message(h.fake) == {
            "contentMessage": {
                "contentInfo": {
                    "fileUrl": "https://cdn.example.com/promo.mp4",
                    "thumbnailUrl": "https://cdn.example.com/promo.jpg",
                    "forceRefresh": False,
                }
            }
        }


SEED_REPLY = {"reply": {"text": "Yes", "postbackData": "usr_msg_yes"}}
SEED_VIEW_LOCATION = {
    "action": {
        "text": "Mobile Office",
        "postbackData": "e460dd65-e69b-4f86-a5af-458683248f2d_url_google",
        "viewLocationAction": {
            "latLong": {"latitude": 43.649269, "longitude": -79.378423},
            "label": "+14165551234",
        },
    }
}


async def test_standalone_card_from_the_seed() -> None:
    async with harness() as h:
        await h.adapter.send(delivery(seed_content()))
        assert only_message(h.fake) == {
            "contentMessage": {
                "richCard": {
                    "standaloneCard": {
                        # "VERTICAL/HORIZONTAL" placeholder: the first alternative. The
                        # seed's thumbnailAlignment only applies to horizontal cards.
                        "cardOrientation": "VERTICAL",
                        "cardContent": {
                            "title": "The Card Title",
                            "description": "The description",
                            "media": {
                                "height": "SHORT",  # from "SHORT/MEDIUM/TALL"
                                "contentInfo": {
                                    "fileUrl": "https://bit.ly/2J5i2x0",
                                    "forceRefresh": False,
                                },
                            },
                            "suggestions": [SEED_REPLY, SEED_VIEW_LOCATION],
                        },
                    }
                },
                "suggestions": [SEED_REPLY, SEED_VIEW_LOCATION],
            }
        }


async def test_horizontal_card_carries_the_thumbnail_alignment() -> None:
    card = {**SEED["content"]["richCard"], "orientation": "HORIZONTAL", "suggestions": []}
    async with harness() as h:
        await h.adapter.send(delivery(seed_content(richCard=card, suggestions=[])))
        standalone = only_message(h.fake)["contentMessage"]["richCard"]["standaloneCard"]
        assert standalone["cardOrientation"] == "HORIZONTAL"
        assert standalone["thumbnailImageAlignment"] == "LEFT"
        assert "suggestions" not in standalone["cardContent"]


async def test_carousel_of_two_cards_with_width() -> None:
    cards = [
        {
            "title": f"Card {n}",
            "description": f"Description {n}",
            "media": {"height": "MEDIUM", "url": f"https://cdn.example.com/{n}.png"},
            "suggestions": [{"type": "reply", "displayText": f"Pick {n}", "postbackData": f"p{n}"}],
        }
        for n in (1, 2)
    ]
    async with harness() as h:
        await h.adapter.send(
            delivery({"type": "carousel", "width": "SMALL/MEDIUM", "cards": cards})
        )
        assert only_message(h.fake) == {
            "contentMessage": {
                "richCard": {
                    "carouselCard": {
                        "cardWidth": "SMALL",
                        "cardContents": [
                            {
                                "title": f"Card {n}",
                                "description": f"Description {n}",
                                "media": {
                                    "height": "MEDIUM",
                                    "contentInfo": {
                                        "fileUrl": f"https://cdn.example.com/{n}.png",
                                        "forceRefresh": False,
                                    },
                                },
                                "suggestions": [
                                    {"reply": {"text": f"Pick {n}", "postbackData": f"p{n}"}}
                                ],
                            }
                            for n in (1, 2)
                        ],
                    }
                }
            }
        }


SUGGESTIONS = [
    pytest.param(
        {"type": "reply", "displayText": "Yes", "postbackData": "yes"},
        {"reply": {"text": "Yes", "postbackData": "yes"}},
        id="reply",
    ),
    pytest.param(
        {
            "type": "viewLocation",
            "displayText": "Office",
            "postbackData": "office",
            "latitude": 37.4220188,
            "longitude": -122.0844786,
            "address": "Googleplex",
        },
        {
            "action": {
                "text": "Office",
                "postbackData": "office",
                "viewLocationAction": {
                    "latLong": {"latitude": 37.4220188, "longitude": -122.0844786},
                    "label": "Googleplex",
                },
            }
        },
        id="viewLocation",
    ),
    pytest.param(
        {"type": "shareLocation", "displayText": "Share", "postbackData": "share"},
        {"action": {"text": "Share", "postbackData": "share", "shareLocationAction": {}}},
        id="shareLocation",
    ),
    pytest.param(
        {
            "type": "openUrl",
            "displayText": "Open",
            "postbackData": "open",
            "url": "https://www.example.com/offer",
        },
        {
            "action": {
                "text": "Open",
                "postbackData": "open",
                "openUrlAction": {"url": "https://www.example.com/offer"},
            }
        },
        id="openUrl",
    ),
    pytest.param(
        {
            "type": "calendarEvent",
            "displayText": "Save date",
            "postbackData": "cal",
            "startTime": "2026-03-01T10:00:00Z",
            "endTime": "1772362800",  # epoch seconds: 2026-03-01T11:00:00Z
            "meetingTitle": "Launch",
            "meetingDescription": "Product launch",
        },
        {
            "action": {
                "text": "Save date",
                "postbackData": "cal",
                "createCalendarEventAction": {
                    "startTime": "2026-03-01T10:00:00.000Z",
                    "endTime": "2026-03-01T11:00:00.000Z",
                    "title": "Launch",
                    "description": "Product launch",
                },
            }
        },
        id="calendarEvent",
    ),
    pytest.param(
        {
            "type": "dialPhone",
            "displayText": "Call us",
            "postbackData": "dial",
            "phone": "+14155550123",
        },
        {
            "action": {
                "text": "Call us",
                "postbackData": "dial",
                "dialAction": {"phoneNumber": "+14155550123"},
            }
        },
        id="dialPhone",
    ),
]


@pytest.mark.parametrize(("suggestion", "wire"), SUGGESTIONS)
async def test_each_suggestion_type(suggestion: dict[str, Any], wire: dict[str, Any]) -> None:
    async with harness() as h:
        await h.adapter.send(
            delivery({"type": "text", "text": "Choose", "suggestions": [suggestion]})
        )
        assert only_message(h.fake) == {"contentMessage": {"text": "Choose", "suggestions": [wire]}}


async def test_view_location_without_coordinates_is_a_query() -> None:
    suggestion = {"type": "viewLocation", "displayText": "Find us", "address": "1 Main St"}
    async with harness() as h:
        await h.adapter.send(delivery({"type": "text", "text": "Hi", "suggestions": [suggestion]}))
        [wire] = only_message(h.fake)["contentMessage"]["suggestions"]
        # The label doubles as postbackData so the tap still says something.
        assert wire == {
            "action": {
                "text": "Find us",
                "postbackData": "Find us",
                "viewLocationAction": {"query": "1 Main St"},
            }
        }


@pytest.mark.parametrize(
    ("content", "wire"),
    [
        ({"type": "agentEvent", "event": "IS_TYPING"}, {"eventType": "IS_TYPING"}),
        (
            {"type": "agentEvent", "event": "READ", "messageId": "MsUserMsg123"},
            {"eventType": "READ", "messageId": "MsUserMsg123"},
        ),
    ],
    ids=["IS_TYPING", "READ"],
)
async def test_agent_events(content: dict[str, Any], wire: dict[str, Any]) -> None:
    async with harness() as h:
        d = delivery(content)
        accepted = await h.adapter.send(d)
        [request] = h.fake.requests
        assert request.path == f"/v1/phones/{RCS_USER}/agentEvents"
        event_id = rbm_event_id(d.message_id, 1)
        assert request.query == {"eventId": event_id, "agentId": AGENT}
        assert request.json == wire
        assert h.fake.events == [(RCS_USER, event_id, wire)]
        assert accepted.provider_message_id == event_id


async def test_expiry_becomes_expire_time() -> None:
    async with harness() as h:
        await h.adapter.send(
            delivery({"type": "text", "text": "OTP 1234"}, expire_at=1772362800000)
        )
        assert only_message(h.fake) == {
            "contentMessage": {"text": "OTP 1234"},
            "expireTime": "2026-03-01T11:00:00.000Z",
        }


@pytest.mark.parametrize(
    "content",
    [
        {"type": "sticker", "text": "?"},
        {"type": "standalone", "richCard": {"orientation": "DIAGONAL", "title": "x"}},
        {"type": "text", "text": "x", "suggestions": [{"type": "teleport", "displayText": "Go"}]},
        {"type": "agentEvent", "event": "READ"},
    ],
    ids=["unknown-type", "bad-enum", "unknown-suggestion", "read-without-id"],
)
async def test_content_rbm_cannot_express_fails_permanently_without_a_request(
    content: dict[str, Any],
) -> None:
    async with harness() as h:
        with pytest.raises(PermanentProviderError) as caught:
            await h.adapter.send(delivery(content))
        assert caught.value.code == "INVALID_CONTENT"
        assert h.fake.requests == []


# ------------------------------------------------------------------- behaviours


async def test_throttled_is_retryable_with_retry_after() -> None:
    async with harness(Behaviour.THROTTLED, retry_after=7) as h:
        with pytest.raises(RetryableProviderError) as caught:
            await h.adapter.send(delivery({"type": "text", "text": "hi"}))
        assert caught.value.code == "RESOURCE_EXHAUSTED"
        assert caught.value.retry_after == 7


async def test_flaky_is_retryable_then_accepted() -> None:
    async with harness(Behaviour.FLAKY) as h:
        d = delivery({"type": "text", "text": "hi"})
        with pytest.raises(RetryableProviderError) as caught:
            await h.adapter.send(d)
        assert caught.value.code == "UNAVAILABLE"
        accepted = await h.adapter.send(replace(d, attempt=2))
        assert accepted.provider_message_id == rbm_message_id(d.message_id, 2)
        assert len(h.fake.messages) == 1


async def test_black_hole_times_out_as_retryable() -> None:
    async with harness(Behaviour.BLACK_HOLE, timeout_seconds="0.3") as h:
        with pytest.raises(RetryableProviderError) as caught:
            await h.adapter.send(delivery({"type": "text", "text": "hi"}))
        assert caught.value.code == "TIMEOUT"


async def test_rejecting_is_permanent_with_googles_status() -> None:
    async with harness(Behaviour.REJECTING) as h:
        with pytest.raises(PermanentProviderError) as caught:
            await h.adapter.send(delivery({"type": "text", "text": "hi"}))
        assert caught.value.code == "PERMISSION_DENIED"


async def test_expired_token_is_retryable_and_never_echoed() -> None:
    async with harness(env={**ENV, "RBM_TOKEN": "stale-token"}) as h:
        with pytest.raises(RetryableProviderError) as caught:
            await h.adapter.send(delivery({"type": "text", "text": "hi"}))
        assert caught.value.code == "UNAUTHENTICATED"
        assert "stale-token" not in str(caught.value)


def test_missing_credentials_fail_at_construction() -> None:
    ctx = AdapterContext(public_url="https://hub.example.com", fetcher=loopback_http(), env={})
    with pytest.raises(ValueError, match="RBM_TOKEN"):
        RbmAdapter(rcs_channel("http://127.0.0.1:9"), ctx)


# --------------------------------------------------------------------- fallback


async def test_not_rcs_capable_falls_back_to_sms() -> None:
    async with harness() as h:
        d = delivery(seed_content(), destination=NO_RCS_USER, attempt=2)
        accepted = await h.adapter.send(d)

        assert len(h.fake.requests) == 1 and h.fake.messages == []
        [sms] = h.sms.attempts
        assert sms.channel_id == SMS_CHANNEL
        assert (sms.message_id, sms.destination, sms.attempt) == (d.message_id, NO_RCS_USER, 2)
        assert sms.type == "text" and sms.text == "fallback text"
        assert sms.content == MessageContent(
            type="text", text="fallback text", sender="senderaddress"
        )

        assert accepted.provider_message_id.startswith("happy-")
        assert (accepted.channel_id, accepted.provider, accepted.segments) == (
            SMS_CHANNEL,
            "sms",
            1,
        )
        assert accepted.earlier == (
            AttemptRecord(
                RCS_CHANNEL,
                "rbm",
                "FAILED",
                provider_message_id=rbm_message_id(d.message_id, 2),
                error_code="404",
                reason="Requested entity was not found.",
            ),
        )


async def test_fallback_text_defaults_to_the_message_text() -> None:
    async with harness() as h:
        content = {"type": "text", "text": "Your code is 1234", "options": {"smsFallback": True}}
        await h.adapter.send(delivery(content, destination=NO_RCS_USER))
        [sms] = h.sms.attempts
        assert sms.content == MessageContent(type="text", text="Your code is 1234")


@pytest.mark.parametrize(
    ("options", "settings"),
    [
        ({"smsFallback": False, "text": "fallback"}, {}),
        ({}, {}),
        ({"smsFallback": True, "text": "fallback"}, {"sms_fallback_channel": ""}),
        ({"smsFallback": True, "text": "fallback"}, {"sms_fallback_channel": "sms-unknown"}),
    ],
    ids=["fallback-off", "no-options", "no-fallback-channel", "fallback-channel-without-adapter"],
)
async def test_not_rcs_capable_without_fallback_is_permanent_404(
    options: dict[str, Any], settings: dict[str, str]
) -> None:
    async with harness(**settings) as h:
        content = {"type": "text", "text": "hi", "options": options}
        with pytest.raises(PermanentProviderError) as caught:
            await h.adapter.send(delivery(content, destination=NO_RCS_USER))
        assert caught.value.code == "404"
        assert h.sms.attempts == []


async def test_server_errors_retry_instead_of_falling_back() -> None:
    async with harness(Behaviour.FLAKY) as h:
        content = {"type": "text", "text": "hi", "options": {"smsFallback": True}}
        with pytest.raises(RetryableProviderError):
            await h.adapter.send(delivery(content, destination=NO_RCS_USER))
        assert h.sms.attempts == []


async def test_capability_check() -> None:
    async with harness() as h:
        assert await h.adapter.capabilities(NO_RCS_USER) is None
        features = await h.adapter.capabilities(RCS_USER)
        assert features is not None and "RICHCARD_STANDALONE" in features
        assert all(uuid.UUID(r.query["requestId"]) for r in h.fake.requests)


# --------------------------------------------------------------------- webhooks


def callback(body: bytes, headers: Mapping[str, str], method: str = "POST") -> CallbackRequest:
    return CallbackRequest(
        method, f"https://hub.example.com/callbacks/{RCS_CHANNEL}", dict(headers), {}, body
    )


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("DELIVERED", DeliveryStatus.DELIVERED),
        ("READ", DeliveryStatus.READ),
        ("TTL_EXPIRATION_REVOKED", DeliveryStatus.EXPIRED),
    ],
)
async def test_user_events_become_receipts(event_type: str, status: DeliveryStatus) -> None:
    async with harness() as h:
        body, headers = pubsub_webhook(user_event(event_type, "msg-1"), CLIENT_TOKEN)
        result = await h.adapter.handle_callback(callback(body, headers))
        assert result.status == 200 and result.inbound == ()
        assert result.receipts == (Receipt("msg-1", status, timestamp=1767323045678),)


async def test_receipt_names_the_message_the_adapter_sent() -> None:
    async with harness() as h:
        accepted = await h.adapter.send(delivery({"type": "text", "text": "hi"}))
        echoed_id = h.fake.messages[0][1]
        body, headers = pubsub_webhook(user_event("DELIVERED", echoed_id), CLIENT_TOKEN)
        result = await h.adapter.handle_callback(callback(body, headers))
        assert [r.provider_message_id for r in result.receipts] == [accepted.provider_message_id]


async def test_typing_and_subscription_events_are_acknowledged_quietly() -> None:
    async with harness() as h:
        for kind in ("IS_TYPING", "UNSUBSCRIBE", "TTL_EXPIRATION_REVOKE_FAILED"):
            body, headers = pubsub_webhook(user_event(kind, "msg-1"), CLIENT_TOKEN)
            result = await h.adapter.handle_callback(callback(body, headers))
            assert (result.status, result.receipts, result.inbound) == (200, (), ())


async def test_bare_event_body_signed_over_itself_is_accepted() -> None:
    async with harness() as h:
        body, headers = bare_webhook(user_event("DELIVERED", "msg-2"), CLIENT_TOKEN)
        result = await h.adapter.handle_callback(callback(body, headers))
        assert [r.provider_message_id for r in result.receipts] == ["msg-2"]


def tampered(body: bytes) -> bytes:
    envelope = json.loads(body)
    event = json.loads(base64.b64decode(envelope["message"]["data"]))
    event["messageId"] = "someone-elses-message"
    envelope["message"]["data"] = base64.b64encode(json.dumps(event).encode()).decode()
    return json.dumps(envelope).encode()


async def test_tampered_or_unsigned_webhooks_are_rejected() -> None:
    async with harness() as h:
        body, headers = pubsub_webhook(user_event("DELIVERED", "msg-1"), CLIENT_TOKEN)
        forged_body, forged_headers = pubsub_webhook(user_event("READ", "msg-1"), "not-the-token")
        cases = [
            (tampered(body), headers),
            (body, {"content-type": "application/json"}),
            (forged_body, forged_headers),
            # A signature over the envelope instead of the event does not count.
            (body, {"x-goog-signature": sign(body, CLIENT_TOKEN)}),
        ]
        for case_body, case_headers in cases:
            with pytest.raises(CallbackRejected) as caught:
                await h.adapter.handle_callback(callback(case_body, case_headers))
            assert caught.value.status == 403


async def test_malformed_webhooks_are_rejected() -> None:
    async with harness() as h:
        with pytest.raises(CallbackRejected) as caught:
            await h.adapter.handle_callback(callback(b"not json", {}))
        assert caught.value.status == 400
        envelope = json.dumps({"message": {"data": "***"}}).encode()
        with pytest.raises(CallbackRejected) as caught:
            await h.adapter.handle_callback(callback(envelope, {"x-goog-signature": "x"}))
        assert caught.value.status == 400
        with pytest.raises(CallbackRejected) as caught:
            await h.adapter.handle_callback(callback(b"{}", {}, method="GET"))
        assert caught.value.status == 405


async def test_webhook_verification_echoes_the_secret() -> None:
    async with harness() as h:
        handshake = json.dumps({"clientToken": CLIENT_TOKEN, "secret": "1234567890"}).encode()
        result = await h.adapter.handle_callback(callback(handshake, {}))
        assert (result.status, result.body, result.content_type) == (
            200,
            b"1234567890",
            "text/plain",
        )
        wrong = json.dumps({"clientToken": "guess", "secret": "1234567890"}).encode()
        with pytest.raises(CallbackRejected):
            await h.adapter.handle_callback(callback(wrong, {}))


async def test_agent_launch_events_are_acknowledged() -> None:
    async with harness() as h:
        launch = {"agentId": AGENT, "launchState": "LAUNCHED"}
        body, headers = pubsub_webhook(launch, CLIENT_TOKEN, {"type": "agent_launch_event"})
        result = await h.adapter.handle_callback(callback(body, headers))
        assert (result.receipts, result.inbound) == ((), ())


async def inbound_of(h: Harness, event: dict[str, Any]) -> Any:
    body, headers = pubsub_webhook(event, CLIENT_TOKEN)
    result = await h.adapter.handle_callback(callback(body, headers))
    assert result.receipts == ()
    [message] = result.inbound
    assert message.channel_id == RCS_CHANNEL
    assert (message.from_address, message.to_address) == ("+14155550100", AGENT)
    assert message.provider_message_id == event["messageId"]
    assert message.timestamp == 1767323045678
    return message


async def test_inbound_text() -> None:
    async with harness() as h:
        message = await inbound_of(h, user_message(text="Hello agent"))
        assert (message.type, message.text) == ("text", "Hello agent")


async def test_inbound_suggestion_response() -> None:
    async with harness() as h:
        tap = {"postbackData": "usr_msg_yes", "text": "Yes", "type": "REPLY"}
        message = await inbound_of(h, user_message(suggestionResponse=tap))
        assert (message.type, message.text) == ("text", "Yes")
        assert message.raw["postbackData"] == "usr_msg_yes"
        assert message.raw["suggestionResponse"] == tap


async def test_inbound_location() -> None:
    async with harness() as h:
        where = {"latitude": 43.649269, "longitude": -79.378423}
        message = await inbound_of(h, user_message(location=where))
        assert (message.type, message.latitude, message.longitude) == (
            "location",
            43.649269,
            -79.378423,
        )


async def test_inbound_user_file() -> None:
    async with harness() as h:
        upload = {
            "payload": {
                "mimeType": "image/jpeg",
                "fileSizeBytes": 34567,
                "fileName": "photo.jpg",
                "fileUri": "https://rcs-user-content.storage.googleapis.com/abc",
            }
        }
        message = await inbound_of(h, user_message(userFile=upload))
        assert (message.type, message.mime_type, message.media_url) == (
            "image",
            "image/jpeg",
            "https://rcs-user-content.storage.googleapis.com/abc",
        )
