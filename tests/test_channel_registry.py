"""One registry owns the channels: failed adapters, owners' inbound, foreign ids, webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from cim.v1 import config_service_pb2 as cfg
from cim.v1 import config_service_pb2_grpc as cfg_grpc
from fakes.twilio import FakeTwilio
from server.api.context import DEFAULT_TENANT
from server.app import Hub
from server.config import DEFAULT_CHANNELS
from server.domain.events import EventType
from server.domain.models import Channel
from server.domain.status import DeliveryStatus
from support.hub import AUTH_HEADERS, authed_channel, rest_call, running_hub
from support.inbound import TOKEN, contact, inbound_hub, text_message, wrapper

SMS = {
    "channel": "sms",
    "from": "sandbox-sms",
    "to": [{"msisdn": ["+447911100001"]}],
    "content": {"type": "text", "text": "still serving"},
}


async def _tenant(hub: Hub, tenant: str) -> dict[str, str]:
    await hub.store.keys.create_tenant(tenant)
    key = await hub.store.keys.create_api_key(tenant)
    return {"x-api-id": key.api_id, "x-api-key": key.secret}


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_a_channel_that_cannot_start_leaves_the_server_serving(
    db_url: str, tmp_path: Path
) -> None:
    # A sent log under a regular file can never be opened: the adapter fails at start.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    broken_file = Channel(
        "broken-file",
        "SMS",
        "sandbox",
        sandbox=True,
        settings={"sent_log": str(blocker / "sent.log")},
    )
    async with running_hub(db_url) as hub:
        b = await _tenant(hub, "tenant-b")
        # Stored as an earlier release might have stored it: settings that no
        # adapter can be built from now.
        await hub.store.config.insert_channel("tenant-b", Channel("b-broken", "SMS", "twilio"))

    async with running_hub(db_url, channels=(*DEFAULT_CHANNELS, broken_file)) as hub:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{hub.http_port}/healthz") as resp,
        ):
            assert resp.status == 200, await resp.text()
        status, mine = await rest_call(hub, "GET", "/api/v1/config/channels/b-broken", b)
        assert status == 200, mine
        mine = mine["data"]["channel"]
        print(f"\ntenant's failed channel: {mine}")
        assert mine["state"] == "FAILED"
        assert "account_sid" in mine["stateReason"]
        status, theirs = await rest_call(hub, "GET", "/api/v1/config/channels/broken-file", b)
        assert status == 200, theirs
        assert theirs["data"]["channel"]["state"] == "FAILED"
        # The operator's diagnosis names a server path; a tenant is not told it.
        assert str(tmp_path) not in str(theirs)
        status, ok = await rest_call(
            hub, "GET", "/api/v1/config/channels/sandbox-sms", AUTH_HEADERS
        )
        assert ok["data"]["channel"]["state"] == "SERVING"

        # The other channels send as usual.
        status, sent = await rest_call(hub, "POST", "/api/v2/message/send", AUTH_HEADERS, SMS)
        assert status == 202, sent
        message_id = sent["results"][0]["messageId"]

        async with asyncio.timeout(10):
            while (  # noqa: ASYNC110 - the state is in the database
                await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
            ).status is not DeliveryStatus.DELIVERED:
                await asyncio.sleep(0.05)


async def test_a_signed_callback_on_tenant_bs_channel_lands_with_b(
    db_url: str, fake_twilio: FakeTwilio
) -> None:
    async with running_hub(db_url) as hub:
        b = await _tenant(hub, "tenant-b")
        channel = {
            "channelId": "b-sms",
            "contactType": "SMS",
            "provider": "twilio",
            "lane": "+15005550006",
            "settings": {
                "account_sid": fake_twilio.account_sid,
                "auth_token": fake_twilio.auth_token,
                "base_url": fake_twilio.url,
            },
        }
        status, created = await rest_call(hub, "POST", "/api/v1/config/channels", b, channel)
        assert status == 201, created
        assert created["data"]["channel"]["state"] == "SERVING"
        assert created["data"]["channel"]["settings"]["auth_token"] == "***"

        url = f"http://127.0.0.1:{hub.http_port}/callbacks/b-sms"
        params = fake_twilio.inbound_params("+447911123456", "+15005550006", "hello B")
        status, _, body = await fake_twilio.post_signed(url, params)
        assert status == 200, body
        forged, _, _ = await fake_twilio.post_signed(url, params, token="not-the-token")
        assert forged == 403

        b_events = await hub.store.events.events_after("tenant-b", 0, 100)
        default_events = await hub.store.events.events_after(DEFAULT_TENANT, 0, 100)
    b_texts = [e.event.message for e in b_events if e.event.type is EventType.CONTENT]
    default_texts = [e.event.message for e in default_events if e.event.type is EventType.CONTENT]
    print(f"\ntenant-b inbound={b_texts} default inbound={default_texts}")
    assert b_texts == ["hello B"]
    assert default_texts == []


async def test_an_id_another_tenant_owns_is_refused_without_saying_so(db_url: str) -> None:
    sandbox = {"channelId": "shared-id", "contactType": "SMS", "provider": "sandbox"}
    async with running_hub(db_url) as hub, authed_channel(f"127.0.0.1:{hub.grpc_port}") as ch:
        b = await _tenant(hub, "tenant-b")
        status, body = await rest_call(
            hub, "POST", "/api/v1/config/channels", AUTH_HEADERS, sandbox
        )
        assert status == 201, body

        status, refused = await rest_call(hub, "POST", "/api/v1/config/channels", b, sandbox)
        print(f"\nforeign id over REST: {status} {refused}")
        assert status == 400
        assert [e["field"] for e in refused["errors"]] == ["channelId"]
        for word in ("default", "tenant", "exist", "owned"):
            assert word not in str(refused).lower()

        stub = cfg_grpc.ConfigServiceStub(ch)
        b_md = tuple(b.items())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateChannel(
                cfg.CreateChannelRequest(
                    channel=cfg.Channel(
                        channel_id="shared-id", contact_type="SMS", provider="sandbox"
                    )
                ),
                metadata=b_md,
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "tenant" not in (err.value.details() or "").lower()

        # Reading it is a 404 shaped like a missing id's.
        status, foreign = await rest_call(hub, "GET", "/api/v1/config/channels/shared-id", b)
        status_missing, missing = await rest_call(hub, "GET", "/api/v1/config/channels/no-such", b)
        assert status == status_missing == 404
        assert foreign["message"].replace("shared-id", "<id>") == missing["message"].replace(
            "no-such", "<id>"
        )

        # The owner still has it, and B's own ids stay B's.
        status, mine = await rest_call(
            hub, "GET", "/api/v1/config/channels/shared-id", AUTH_HEADERS
        )
        assert status == 200, mine
        own = {**sandbox, "channelId": "b-only"}
        status, body = await rest_call(hub, "POST", "/api/v1/config/channels", b, own)
        assert status == 201, body
        status, listed = await rest_call(
            hub, "GET", "/api/v1/config/channels?sandbox=true", AUTH_HEADERS
        )
        assert "b-only" not in [c["channelId"] for c in listed["results"]]


async def test_unauthenticated_webhooks_do_not_spend_the_default_tenants_budget(
    db_url: str, fake_twilio: FakeTwilio
) -> None:
    burst = 3
    twilio = Channel(
        "sms-twilio",
        "SMS",
        "twilio",
        settings={
            "account_sid": fake_twilio.account_sid,
            "auth_token_env": "CIMHUB_TEST_REGISTRY_TWILIO_TOKEN",
            "base_url": fake_twilio.url,
        },
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIMHUB_TEST_REGISTRY_TWILIO_TOKEN", fake_twilio.auth_token)
        async with inbound_hub(
            db_url, rate_per_s=0.001, rate_burst=burst, channels=(*DEFAULT_CHANNELS, twilio)
        ) as hub:
            payload = wrapper(text_message("x1"))
            wrong = {"x-verify-token": "wrong-token"}
            answers = [
                (await rest_call(hub, "POST", "/api/v1/message/receive", wrong, payload))[0]
                for _ in range(3 * burst)
            ]
            url = f"http://127.0.0.1:{hub.http_port}/callbacks/sms-twilio"
            params = fake_twilio.inbound_params("+447911123456", "+15005550006", "x")
            forged = [
                (await fake_twilio.post_signed(url, params, token="forged"))[0]
                for _ in range(3 * burst)
            ]
            # The default tenant's whole burst is still there, and then it is spent.
            authed = [
                (await rest_call(hub, "GET", "/api/v1/config/channels", AUTH_HEADERS))[0]
                for _ in range(burst + 1)
            ]
    print(f"\nwrong token={answers} forged callbacks={forged} then authed={authed}")
    assert answers == [401] * (3 * burst)
    assert forged == [403] * (3 * burst)
    assert authed == [200] * burst + [429]


async def test_inbound_on_a_channel_created_at_runtime_normalises_addresses(db_url: str) -> None:
    async with inbound_hub(db_url) as hub:
        b = await _tenant(hub, "tenant-b")
        channel = {"channelId": "b-rt-sms", "contactType": "SMS", "provider": "sandbox"}
        status, body = await rest_call(hub, "POST", "/api/v1/config/channels", b, channel)
        assert status == 201, body
        payload = wrapper(
            text_message("rt-1", sender="+44 (0)7911 100077"),
            contacts=[contact(channel_id="b-rt-sms", phone="+44 (0)7911 100077")],
        )
        headers = {**b, "x-verify-token": TOKEN}
        status, body = await rest_call(hub, "POST", "/api/v1/message/receive", headers, payload)
        assert status == 200, body
        events = await hub.store.events.events_after("tenant-b", 0, 100)
    customers = {e.event.customer_id for e in events if e.event.type is EventType.CONTENT}
    print(f"\ninbound customer ids on a runtime channel: {customers}")
    assert customers == {"+447911100077"}


async def test_a_channel_reaches_only_the_channels_its_owner_may_use(db_url: str) -> None:
    # What an adapter gets for another channel, such as an RBM channel's SMS fallback.
    sandbox = {"contactType": "SMS", "provider": "sandbox"}
    async with running_hub(db_url) as hub:
        b = await _tenant(hub, "tenant-b")
        for headers, channel_id in ((AUTH_HEADERS, "a-sms"), (b, "b-sms")):
            status, body = await rest_call(
                hub,
                "POST",
                "/api/v1/config/channels",
                headers,
                {**sandbox, "channelId": channel_id},
            )
            assert status == 201, body
        reach = {
            owner: sorted(
                cid
                for cid in ("a-sms", "b-sms", "sandbox-sms")
                if hub.channels.adapters_for(owner)(cid) is not None
            )
            for owner in (DEFAULT_TENANT, "tenant-b", None)
        }
    print(f"\nreachable fallbacks by owner: {reach}")
    assert reach == {
        DEFAULT_TENANT: ["a-sms", "sandbox-sms"],
        "tenant-b": ["b-sms", "sandbox-sms"],
        None: ["sandbox-sms"],
    }
