"""The spine end to end: REST and gRPC sends, dispatch to the sandbox, live events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from cim.v1 import outbound_pb2 as o
from support.hub import channel_to, rest_session, running_hub

SEED = json.loads((Path(__file__).parent / "seeds" / "outbound_msg.json").read_text())


async def _collect_statuses(stream, message_id: str, want: int) -> list[n.Change]:
    seen: list[n.Change] = []
    async with asyncio.timeout(10):
        async for item in stream:
            if item.WhichOneof("item") != "notification":
                continue
            seen.extend(
                c for c in item.notification.body.changes if c.event.message_id == message_id
            )
            if len(seen) >= want:
                return seen
    return seen


async def test_seed_outbound_msg_over_rest_streams_submitted_then_delivered(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stream = ng.NotificationServiceStub(channel).StreamNotifications(
            n.StreamNotificationsRequest()
        )
        await asyncio.sleep(0.2)  # the subscription must exist before the send
        async with rest_session() as http:
            resp = await http.post(
                f"http://127.0.0.1:{hub.http_port}/api/v1/message/send", json=SEED
            )
            body = await resp.json()
        assert resp.status == 200, body
        message_id = body["data"]["messageId"]
        assert message_id
        assert body["data"]["channelId"] == "91SERVICENUMBER"

        changes = await _collect_statuses(stream, message_id, want=3)
        stream.cancel()
        assert [c.event.status for c in changes] == ["ACCEPTED", "SUBMITTED", "DELIVERED"]
        sequences = [c.sequence for c in changes]
        assert sequences == sorted(sequences) and len(set(sequences)) == 3
        assert all(c.conversation_id == body["data"]["conversationId"] for c in changes)
        assert all(c.event.type == "DeliveryStatusEvent" for c in changes)


async def test_grpc_send_is_persisted_with_status_history(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(
            m.SendMessageRequest(
                channel_id="sandbox",
                type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
                to=o.OutboundContact(phone="+447700900123"),
                text=o.OutboundText(body="hello"),
            )
        )
        assert sent.message_id
        async with asyncio.timeout(10):
            while True:
                got = (
                    await stub.GetMessage(m.GetMessageRequest(message_id=sent.message_id))
                ).message
                if got.status == d.DELIVERY_STATUS_DELIVERED:
                    break
                await asyncio.sleep(0.05)
        assert got.text == "hello"
        assert got.destination == "+447700900123"
        names = [d.DeliveryStatus.Name(h.status) for h in got.history]
        assert names == [
            "DELIVERY_STATUS_ACCEPTED",
            "DELIVERY_STATUS_SUBMITTED",
            "DELIVERY_STATUS_DELIVERED",
        ]
        listed = await stub.ListMessages(m.ListMessagesRequest(page_size=10))
        assert [x.id for x in listed.results] == [sent.message_id]


async def test_unknown_message_is_not_found(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await mg.MessagingServiceStub(channel).GetMessage(
                m.GetMessageRequest(message_id="nope")
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"channelId": "sandbox", "type": "text", ', ""),
        ({**SEED, "type": "hologram"}, "type"),
        ({**SEED, "colour": "blue"}, "colour"),
        ({k: v for k, v in SEED.items() if k != "channelId"}, "channelId"),
        ({k: v for k, v in SEED.items() if k != "to"}, "to"),
        ({**SEED, "text": {}}, "text.body"),
        ({**SEED, "channelId": "no-such-channel"}, "channelId"),
        ({**SEED, "to": {"phone": 12}, "channelId": "sandbox", "mask": "maybe"}, "mask"),
    ],
    ids=[
        "malformed",
        "unknown-type",
        "unknown-field",
        "no-channel",
        "no-to",
        "no-text",
        "bad-channel",
        "bad-bool",
    ],
)
async def test_bad_input_is_400_with_field_path(db_url: str, body: object, field: str) -> None:
    async with running_hub(db_url) as hub, rest_session() as http:
        data = body if isinstance(body, str) else json.dumps(body)
        resp = await http.post(
            f"http://127.0.0.1:{hub.http_port}/api/v1/message/send",
            data=data,
            headers={"Content-Type": "application/json"},
        )
        payload = await resp.json()
    assert resp.status == 400, payload
    assert payload["errors"], payload
    if field:
        assert field in [e["field"] for e in payload["errors"]], payload


async def test_session_and_config_routes_over_rest(db_url: str) -> None:
    async with running_hub(db_url) as hub, rest_session() as http:
        base = f"http://127.0.0.1:{hub.http_port}"
        closed = await http.post(
            f"{base}/api/v1/session/close", json={"sessionId": "61f3810a02e14c0877fc1a32"}
        )
        closed_body = await closed.json()
        listed = await http.get(f"{base}/api/v1/sessions")
        listed_body = await listed.json()
        plain = await (await http.get(f"{base}/api/v1/config/channels")).json()
        sandbox = await (await http.get(f"{base}/api/v1/config/channels?sabdnox=true")).json()
    assert closed.status == 404
    assert closed_body["messageKey"] == "SESSION_NOT_FOUND"
    assert listed.status == 200 and listed_body["results"] == []
    assert plain["results"] == []  # only sandbox channels are configured by default
    assert {c["channelId"] for c in sandbox["results"]} == {
        "sandbox",
        "91SERVICENUMBER",
        "sandbox-sms",
        "sandbox-email",
        "sandbox-rcs",
        "sandbox-whatsapp",
    }
