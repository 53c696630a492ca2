"""The consent ledger with the real Twilio adapter against a fake Twilio on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cim.v1 import consent_service_pb2 as c
from cim.v1 import consent_service_pb2_grpc as cg
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from fakes.server import Behaviour
from fakes.twilio import FakeTwilio
from server.config import DEFAULT_CHANNELS
from server.domain.models import Channel
from support.clock import eventually
from support.hub import channel_to, running_hub

TOKEN_VAR = "CIMHUB_TEST_TWILIO_TOKEN"
LANE = "+15005550006"
CUSTOMER = "+447911123456"


def twilio_channel(fake: FakeTwilio) -> Channel:
    settings = {
        "account_sid": fake.account_sid,
        "auth_token_env": TOKEN_VAR,
        "base_url": fake.url,
        "timeout_seconds": "2",
    }
    return Channel("sms-twilio", "SMS", "twilio", lane=LANE, settings=settings)


@pytest.fixture
async def fake_twilio(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(getattr(request, "param", Behaviour.HAPPY))
    monkeypatch.setenv(TOKEN_VAR, fake.auth_token)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def send_request(body: str) -> m.SendMessageRequest:
    return m.SendMessageRequest(
        channel_id="sms-twilio",
        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
        to=o.OutboundContact(phone=CUSTOMER),
        text=o.OutboundText(body=body),
    )


async def test_stop_texted_to_twilio_is_confirmed_once_and_stops_sends(
    db_url: str, fake_twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels) as hub, channel_to(hub) as ch:
        url = f"http://127.0.0.1:{hub.http_port}/callbacks/sms-twilio"
        stop = fake_twilio.inbound_params(CUSTOMER, LANE, "Stop.")
        for params in (stop, stop, fake_twilio.inbound_params(CUSTOMER, LANE, "STOPALL")):
            status, _, _ = await fake_twilio.post_signed(url, params)
            assert status == 200
        await eventually(lambda: len(fake_twilio.requests) == 1)
        refused = await mg.MessagingServiceStub(ch).SendMessage(send_request("Sale"))
        got = await cg.ConsentServiceStub(ch).GetConsent(
            c.GetConsentRequest(channel_type="SMS", address=CUSTOMER)
        )

    [reply] = fake_twilio.requests
    assert reply.form["To"] == CUSTOMER and "unsubscribed" in reply.form["Body"]
    assert refused.refusal == "OPTED_OUT"
    assert [(h.source, h.reason) for h in got.history] == [
        (c.CONSENT_SOURCE_INBOUND_KEYWORD, "Stop."),
        (c.CONSENT_SOURCE_INBOUND_KEYWORD, "STOPALL"),
    ]


@pytest.mark.parametrize("fake_twilio", [Behaviour.REJECTING], indirect=True)
async def test_twilio_21610_is_recorded_and_the_next_send_is_not_made(
    db_url: str, fake_twilio: FakeTwilio
) -> None:
    channels = (*DEFAULT_CHANNELS, twilio_channel(fake_twilio))
    async with running_hub(db_url, channels=channels) as hub, channel_to(hub) as ch:
        stub, consents = mg.MessagingServiceStub(ch), cg.ConsentServiceStub(ch)
        first = await stub.SendMessage(send_request("Hello"))
        request = c.ListConsentsRequest(source=c.CONSENT_SOURCE_PROVIDER_ERROR)
        async with asyncio.timeout(10):
            while not (listed := await consents.ListConsents(request)).results:  # noqa: ASYNC110 - state is in the database
                await asyncio.sleep(0.05)
        second = await stub.SendMessage(send_request("Hello again"))

    [entry] = listed.results
    assert (entry.address, entry.message_id) == (CUSTOMER, first.message_id)
    assert entry.reason.startswith("21610")
    assert second.refusal == "OPTED_OUT"
    assert len(fake_twilio.requests) == 1
