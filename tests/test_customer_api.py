"""Customer data and events, contacts, the signed tenant webhook, and runtime channels."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from cim.v1 import config_service_pb2 as cfg
from cim.v1 import config_service_pb2_grpc as cfg_grpc
from cim.v1 import customer_service_pb2 as cust
from cim.v1 import customer_service_pb2_grpc as cust_grpc
from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from server.domain.contacts import ContactInfo
from server.domain.webhook_signing import verify
from support.clock import eventually
from support.hub import channel_to, rest_session, running_hub


async def _call(hub: Any, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with (
        rest_session() as http,
        http.request(method, f"http://127.0.0.1:{hub.http_port}{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


def _links(contact: str) -> list[dict[str, str]]:
    return [{"linkName": "customer", "linkType": "CONTACT", "linkValue": contact}]


async def test_customer_events_stream_live_and_list_per_contact(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stream = ng.NotificationServiceStub(channel).StreamNotifications(
            n.StreamNotificationsRequest(event_types=["CustomerEvent"], customer_id="wa:1")
        )
        await stream.read()  # live from here on
        for i in range(3):
            status, reply = await _call(
                hub,
                "POST",
                "/api/v1/event/push",
                {"eventName": f"ORDER_{i}", "id": 100 + i, "links": _links("wa:1")},
            )
            assert status == 200, reply
        await _call(hub, "POST", "/api/v1/event/push", {"eventName": "X", "id": "o", "links": []})
        seen: list[Any] = []
        async with asyncio.timeout(10):
            while len(seen) < 3:
                item = await stream.read()
                if item.WhichOneof("item") == "notification":
                    seen.extend(c.event for c in item.notification.body.changes)
        stream.cancel()
        status, first = await _call(hub, "GET", "/api/v1/contacts/wa:1/events?pageSize=2")
        _, rest = await _call(
            hub,
            "GET",
            f"/api/v1/contacts/wa:1/events?pageSize=2&pageToken={first['meta']['nextPageToken']}",
        )
    assert [e.message for e in seen] == ["ORDER_0", "ORDER_1", "ORDER_2"]
    assert seen[0].type == "CustomerEvent" and seen[0].customer_id == "wa:1"
    assert seen[0].data["id"] == "100"
    assert status == 200
    names = [e["eventName"] for e in first["results"] + rest["results"]]
    assert names == ["ORDER_2", "ORDER_1", "ORDER_0"]
    assert "nextPageToken" not in rest["meta"]


async def test_customer_objects_upsert_and_list_per_contact(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        for i, tier in enumerate(("silver", "gold")):
            status, _ = await _call(
                hub,
                "POST",
                "/api/v1/data/push",
                {
                    "id": "cust-1",
                    "type": "CUSTOMER",
                    "data": {"tier": tier, "n": i},
                    "links": _links("fb:9"),
                },
            )
            assert status == 200
        status, bad = await _call(hub, "POST", "/api/v1/data/push", {"data": {}, "links": []})
        listed = await cust_grpc.CustomerServiceStub(channel).ListCustomerObjects(
            cust.ListCustomerObjectsRequest(contact_id="fb:9")
        )
    assert [(o.id, o.data["tier"]) for o in listed.results] == [("cust-1", "gold")]
    assert status == 400
    assert {e["field"] for e in bad["errors"]} == {"id", "type"}


async def test_contacts_are_listed_with_their_language(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = cust_grpc.CustomerServiceStub(channel)
        for i in range(3):
            await hub.store.customers.update_contact("default", ContactInfo(contact_id=f"c{i}"))
        await stub.UpdateContactPrefs(cust.UpdateContactPrefsRequest(contact_id="c1", lang="pt_BR"))
        page = await stub.ListContacts(cust.ListContactsRequest(page_size=2))
        rest = await stub.ListContacts(
            cust.ListContactsRequest(page_size=2, page_token=page.next_page_token)
        )
        status, one = await _call(hub, "GET", "/api/v1/contacts/c1")
        missing, _ = await _call(hub, "GET", "/api/v1/contacts/nobody")
        huge, refused = await _call(hub, "GET", f"/api/v1/contacts?pageToken={10**19}:0")
    ids = [c.contact_id for c in [*page.results, *rest.results]]
    assert ids == ["c0", "c1", "c2"] and not rest.next_page_token
    assert status == 200 and one["data"]["contact"]["lang"] == "pt_BR"
    assert missing == 404
    assert huge == 400 and refused["errors"][0]["field"] == "pageToken"


async def test_webhook_with_signing_secret_receives_signed_events(db_url: str) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        async with running_hub(db_url) as hub:
            status, reply = await _call(hub, "POST", "/api/v1/config/webhook", {"url": url})
            assert status == 200, reply
            secret = reply["data"]["secret"]["signingSecret"]
            await _call(
                hub, "POST", "/api/v1/event/push", {"eventName": "PAID", "id": "e1", "links": []}
            )
            await eventually(lambda: len(received) >= 1)
            status, off = await _call(hub, "POST", "/api/v1/config/webhook", {"url": ""})
    finally:
        await runner.cleanup()
    headers, body = received[0]
    assert verify(secret, headers, body)
    change = json.loads(body)["body"]["changes"][0]
    assert change["event"]["type"] == "CustomerEvent"
    assert reply["data"]["webhook"] == url and reply["data"]["appMode"] == "WEBHOOK"
    assert status == 200 and off["data"].get("webhook", "") == ""


async def test_runtime_channels_send_persist_and_redact(db_url: str) -> None:
    new = cfg.Channel(
        channel_id="rt-sms",
        contact_type="SMS",
        provider="sandbox",
        lane="RTLANE",
        name="Runtime SMS",
    )
    new.settings.update({"apiKey": "s3cret", "region": "eu"})
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = cfg_grpc.ConfigServiceStub(channel)
        created = await stub.CreateChannel(cfg.CreateChannelRequest(channel=new))
        status, reply = await _call(
            hub,
            "POST",
            "/api/v1/message/send",
            {
                "channelId": "rt-sms",
                "type": "text",
                "to": {"phone": "+447911100077"},
                "text": {"body": "hi"},
            },
        )
        assert status == 200, reply
        message_id = reply["data"]["messageId"]

        async def delivered() -> bool:
            _, got = await _call(hub, "GET", f"/api/v1/messages/{message_id}")
            return bool(got["data"]["message"]["status"] == "DELIVERED")

        async with asyncio.timeout(10):
            while not await delivered():  # noqa: ASYNC110 - polling the server over HTTP
                await asyncio.sleep(0.05)
        status, dup = await _call(
            hub,
            "POST",
            "/api/v1/config/channels",
            {"channelId": "rt-sms", "contactType": "SMS", "provider": "sandbox"},
        )
        status_bad, bad = await _call(
            hub,
            "POST",
            "/api/v1/config/channels",
            {"channelId": "x", "contactType": "SMS", "provider": "carrier-pigeon"},
        )
        status_ro, ro = await _call(hub, "DELETE", "/api/v1/config/channels/sandbox")
    # A restart loads the stored channel again.
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = cfg_grpc.ConfigServiceStub(channel)
        again = await stub.GetChannel(cfg.GetChannelRequest(channel_id="rt-sms"))
        await stub.DeleteChannel(cfg.DeleteChannelRequest(channel_id="rt-sms"))
        listed = await stub.ListChannels(cfg.ListChannelsRequest(sandbox=True))
    assert created.channel.settings["apiKey"] == "***"
    assert created.channel.settings["region"] == "eu"
    assert again.channel.lane == "RTLANE" and again.channel.settings["apiKey"] == "***"
    assert "rt-sms" not in {c.channel_id for c in listed.results}
    assert status == 409 and dup["messageKey"] == "CHANNEL_EXISTS"
    assert status_bad == 400 and bad["errors"][0]["field"] == "provider"
    assert status_ro == 400 and ro["messageKey"] == "CHANNEL_READ_ONLY"


async def test_a_runtime_channel_is_its_tenants_alone(db_url: str) -> None:
    own = {"channelId": "a-only", "contactType": "SMS", "provider": "sandbox", "lane": "ALANE"}
    async with running_hub(db_url) as hub:
        await hub.store.keys.create_tenant("tenant-b")
        b_key = await hub.store.keys.create_api_key("tenant-b")
        b = {"x-api-id": b_key.api_id, "x-api-key": b_key.secret}
        created, _ = await _call(hub, "POST", "/api/v1/config/channels", own)
        single = {
            "channelId": "a-only",
            "type": "text",
            "to": {"phone": "+447911100088"},
            "text": {"body": "hi"},
        }
        batch = {
            "channel": "sms",
            "from": "ALANE",
            "to": [{"msisdn": ["+447911100088"]}],
            "content": {"type": "text", "text": "hi"},
        }
        base = f"http://127.0.0.1:{hub.http_port}"
        async with rest_session(headers=b) as http:
            async with http.post(f"{base}/api/v1/message/send", json=single) as resp:
                b_single = (resp.status, await resp.json())
            async with http.post(f"{base}/api/v2/message/send", json=batch) as resp:
                b_batch = (resp.status, await resp.json())
            b_message = b_batch[1]["results"][0]["messageId"]
            async with http.get(f"{base}/api/v1/messages/{b_message}") as resp:
                b_channel = (await resp.json())["data"]["message"]["channelId"]
            async with http.get(f"{base}/api/v1/config/channels") as resp:
                b_list = await resp.json()
            async with http.get(f"{base}/api/v1/config/channels/a-only") as resp:
                b_get = resp.status
        a_single, _ = await _call(hub, "POST", "/api/v1/message/send", single)
    assert created == 201
    assert b_single[0] == 400 and b_single[1]["errors"][0]["field"] == "channelId"
    # The batch falls back to a channel tenant B may use, never to A's.
    assert b_batch[0] == 202 and b_channel == "sandbox-sms"
    assert "a-only" not in {c["channelId"] for c in b_list["results"]} and b_get == 404
    assert a_single == 200
