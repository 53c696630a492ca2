"""Provider adapters inside the running hub: callbacks, throttling, timeouts, rejections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from fakes.rbm import FakeRbm
from fakes.server import Behaviour
from fakes.twilio import FakeTwilio
from server.api.context import DEFAULT_TENANT
from server.config import DEFAULT_CHANNELS
from server.domain.events import EventType
from server.domain.models import Channel
from server.domain.paging import MESSAGES
from server.domain.status import DeliveryStatus
from support.hub import authed_channel, rest_session, running_hub

TOKEN_VAR = "CIMHUB_TEST_TWILIO_TOKEN"
TO = "+447911123456"


def twilio_channel(fake: FakeTwilio) -> Channel:
    return Channel(
        "sms-twilio",
        "SMS",
        "twilio",
        lane="+15005550006",
        settings={
            "account_sid": fake.account_sid,
            "auth_token_env": TOKEN_VAR,
            "base_url": fake.url,
            "timeout_seconds": "0.5",
        },
    )


@pytest.fixture
async def fake_twilio(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeTwilio]:
    behaviour = getattr(request, "param", Behaviour.HAPPY)
    fake = FakeTwilio(behaviour, failures=1, retry_after=1)
    monkeypatch.setenv(TOKEN_VAR, fake.auth_token)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def _send(hub, text: str = "hello") -> str:  # type: ignore[no-untyped-def]
    async with authed_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        reply = await mg.MessagingServiceStub(channel).SendMessage(
            m.SendMessageRequest(
                channel_id="sms-twilio",
                type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
                to=o.OutboundContact(phone=TO),
                text=o.OutboundText(body=text),
            )
        )
    return reply.message_id


async def _status(hub, message_id: str) -> DeliveryStatus:  # type: ignore[no-untyped-def]
    return (await hub.store.messages.get_message(DEFAULT_TENANT, message_id)).status


async def _wait_for(hub, message_id: str, status: DeliveryStatus, within: float = 10) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(within):
        while await _status(hub, message_id) is not status:  # noqa: ASYNC110 - state is in the database
            await asyncio.sleep(0.05)


async def test_status_callback_replayed_three_times_changes_state_once(
    db_url: str, fake_twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels) as hub:
        message_id = await _send(hub, "ping " * 40)
        await _wait_for(hub, message_id, DeliveryStatus.SUBMITTED)
        sid = next(iter(fake_twilio.messages))
        sent = fake_twilio.messages[sid]
        assert sent.to == TO and sent.from_ == "+15005550006" and sent.body == "ping " * 40
        assert sent.status_callback == f"http://127.0.0.1:{hub.http_port}/callbacks/sms-twilio"
        answers = [await fake_twilio.deliver(sid, "delivered") for _ in range(3)]
        await _wait_for(hub, message_id, DeliveryStatus.DELIVERED)
        got = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
        events = await hub.store.events.events_after(DEFAULT_TENANT, 0, 100)
    assert all(200 <= a < 300 for a in answers)
    assert [h.status for h in got.history].count(DeliveryStatus.DELIVERED) == 1
    delivered_events = [
        e for e in events if e.event.message_id == message_id and e.event.status == "DELIVERED"
    ]
    assert len(delivered_events) == 1
    assert got.segments == 2  # 200 GSM-7 characters
    assert got.attempt_log[-1].provider_message_id == sid


async def test_a_forged_callback_is_refused_and_changes_nothing(
    db_url: str, fake_twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels) as hub:
        message_id = await _send(hub)
        await _wait_for(hub, message_id, DeliveryStatus.SUBMITTED)
        sid = next(iter(fake_twilio.messages))
        status, _, _ = await fake_twilio.post_signed(
            fake_twilio.messages[sid].status_callback,
            {
                "MessageSid": sid,
                "MessageStatus": "delivered",
                "AccountSid": fake_twilio.account_sid,
            },
            token="not-the-token",
        )
        await asyncio.sleep(0.3)
        assert status == 403
        assert await _status(hub, message_id) is DeliveryStatus.SUBMITTED


@pytest.mark.parametrize("fake_twilio", [Behaviour.THROTTLED], indirect=True)
async def test_throttled_is_retried_after_retry_after(db_url: str, fake_twilio: FakeTwilio) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels, retry_base_ms=10) as hub:
        message_id = await _send(hub)
        await _wait_for(hub, message_id, DeliveryStatus.SUBMITTED)
        got = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
    first, second = got.attempt_log
    assert (first.outcome, first.error_code) == ("FAILED", "20429")
    assert second.outcome == "ACCEPTED"
    waited = second.timestamp - first.timestamp
    print(f"\nthrottled: retried {waited} ms after a Retry-After of 1 s")
    assert waited >= 1000


@pytest.mark.parametrize("fake_twilio", [Behaviour.BLACK_HOLE], indirect=True)
async def test_black_hole_times_out_and_is_retried(db_url: str, fake_twilio: FakeTwilio) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(
        db_url, channels=channels, retry_base_ms=20, retry_max_attempts=2
    ) as hub:
        message_id = await _send(hub)
        await _wait_for(hub, message_id, DeliveryStatus.FAILED)
        got = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
    assert [(a.outcome, a.error_code) for a in got.attempt_log] == [
        ("FAILED", "TIMEOUT"),
        ("FAILED", "TIMEOUT"),
    ]
    assert len(fake_twilio.requests) == 2


@pytest.mark.parametrize("fake_twilio", [Behaviour.REJECTING], indirect=True)
async def test_rejecting_fails_with_the_provider_code(db_url: str, fake_twilio: FakeTwilio) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels) as hub:
        message_id = await _send(hub)
        await _wait_for(hub, message_id, DeliveryStatus.FAILED)
        got = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
    assert got.history[-1].reason.startswith("21610: ")
    assert got.attempt_log[-1].error_code == "21610"
    assert len(fake_twilio.requests) == 1


async def test_inbound_sms_enters_the_event_log_once(db_url: str, fake_twilio: FakeTwilio) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels) as hub:
        params = fake_twilio.inbound_params(TO, "+15005550006", "STOP please")
        url = f"http://127.0.0.1:{hub.http_port}/callbacks/sms-twilio"
        results = [await fake_twilio.post_signed(url, params) for _ in range(2)]
        events = await hub.store.events.events_after(DEFAULT_TENANT, 0, 100)
    assert all(status == 200 and "xml" in ctype for status, ctype, _ in results)
    inbound = [e for e in events if e.event.type is EventType.CONTENT]
    assert len(inbound) == 1
    assert inbound[0].event.message == "STOP please"
    assert inbound[0].event.originator_role == "CONSUMER" and inbound[0].event.customer_id == TO


RBM_TOKEN_VAR = "CIMHUB_TEST_RBM_TOKEN"
RBM_CLIENT_VAR = "CIMHUB_TEST_RBM_CLIENT_TOKEN"


async def test_rcs_to_sms_fallback_is_two_attempts_on_one_message(
    db_url: str, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_rcs = "+447911000111"
    monkeypatch.setenv(RBM_TOKEN_VAR, "rbm-token")
    monkeypatch.setenv(RBM_CLIENT_VAR, "rbm-client-token")
    async with FakeRbm(token="rbm-token", agent_id="agent_1", non_capable={not_rcs}) as rbm:
        rcs = Channel(
            "rcs-main",
            "RCS",
            "rbm",
            settings={
                "agent_id": "agent_1",
                "token_env": RBM_TOKEN_VAR,
                "client_token_env": RBM_CLIENT_VAR,
                "base_url": rbm.url,
                "sms_fallback_channel": "sms-twilio",
            },
        )
        channels = (
            *(c for c in DEFAULT_CHANNELS if c.contact_type != "RCS"),
            rcs,
            twilio_channel(fake_twilio),
        )
        body = {
            "channel": "rcs",
            "from": "agent_1",
            "to": [{"msisdn": [not_rcs], "correlationId": "fb-1"}],
            "options": {
                "smsFallback": True,
                "smsSenderId": "+15005550006",
                "text": "Your code is 4242",
            },
            "content": {"type": "text", "text": "Your code is 4242 (rich)"},
        }
        async with running_hub(db_url, channels=channels) as hub:
            async with (
                rest_session() as http,
                http.post(
                    f"http://127.0.0.1:{hub.http_port}/api/v2/message/send", json=body
                ) as resp,
            ):
                reply = await resp.json()
            assert resp.status == 202, reply
            message_id = reply["results"][0]["messageId"]
            await _wait_for(hub, message_id, DeliveryStatus.SUBMITTED)
            sid = next(iter(fake_twilio.messages))
            # The SMS provider's receipt arrives on the SMS channel yet lands on the RCS message.
            await fake_twilio.deliver(sid, "delivered")
            await _wait_for(hub, message_id, DeliveryStatus.DELIVERED)
            got = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
            listed = await hub.store.messages.list_messages(
                DEFAULT_TENANT, page=MESSAGES.request(DEFAULT_TENANT, 10, "")
            )
    assert len(listed.items) == 1  # one logical message, never a second one
    assert got.channel_id == "rcs-main"
    rcs_try, sms_try = got.attempt_log
    assert (rcs_try.channel_id, rcs_try.provider, rcs_try.outcome, rcs_try.error_code) == (
        "rcs-main",
        "rbm",
        "FAILED",
        "404",
    )
    assert (sms_try.channel_id, sms_try.outcome, sms_try.provider_message_id) == (
        "sms-twilio",
        "ACCEPTED",
        sid,
    )
    sms = fake_twilio.messages[sid]
    assert (sms.to, sms.from_, sms.body) == (not_rcs, "+15005550006", "Your code is 4242")
    assert len(rbm.requests) == 1
