"""The public API's own forms: CIM bodies with a type, the send receipt's id, and
contacts known only from their language."""

from __future__ import annotations

import copy
from typing import Any

import grpc
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from cim.v1 import cim_message_pb2 as c
from cim.v1 import customer_service_pb2 as cust
from cim.v1 import customer_service_pb2_grpc as cust_grpc
from cim.v1 import session_service_pb2 as s
from cim.v1 import session_service_pb2_grpc as sg
from server.gateway.jsonmap import parse, to_json
from server.storage import migrate
from server.storage.customer_schema import contact_prefs, contacts
from support.hub import channel_to, rest_session, running_hub

ACTIVITIES = "/api/v1/conversation/activities"

# One body per public type, written as the public model's examples write them:
# nulls for fields not given, a number where a string is meant, "name-prefix".
PUBLIC_BODIES: dict[str, dict[str, Any]] = {
    "PLAIN": {"type": "PLAIN", "markdownText": "Hi"},
    "IMAGE": {
        "type": "IMAGE",
        "caption": "Screenshot",
        "attachment": {
            "mediaUrl": "https://files.example/743dc126",
            "thumbnail": None,
            "mimeType": "image/jpeg",
            "size": 41047,
        },
        "markdownText": None,
        "additionalDetails": {"timestamp": "1652080145"},
    },
    "VIDEO": {
        "type": "VIDEO",
        "caption": "clip",
        "attachment": {"mediaUrl": "https://files.example/v.mp4", "mimeType": "video/mp4"},
    },
    "AUDIO": {
        "type": "AUDIO",
        "attachment": {"mediaUrl": "https://files.example/a.ogg", "size": 512},
    },
    "FILE": {
        "type": "FILE",
        "caption": "invoice",
        "attachment": {"mediaUrl": "https://files.example/f.pdf", "mimeType": "application/pdf"},
    },
    "STICKER": {"type": "STICKER", "attachment": {"mediaUrl": "https://files.example/s.webp"}},
    "LOCATION": {
        "type": "LOCATION",
        "location": {"latitude": 31.51335334777832, "longitude": 74.3333969116211},
        "markdownText": None,
        "additionalDetails": {"name": "Stadium", "address": "Kardar Road", "url": None},
    },
    "CONTACT": {
        "type": "CONTACT",
        "markdownText": None,
        "additionalDetails": None,
        "contacts": [
            {
                "name": {
                    "formattedName": "Dummy Name",
                    "additionalNameDetails": {
                        "first_name": "Dummy",
                        "last_name": "Name",
                        "middle_name": None,
                        "name-prefix": None,
                    },
                },
                "phones": [
                    {
                        "phone": "+92123456489789",
                        "additionalPhoneDetails": {"type": "CELL", "wa_id": 92123456489789},
                    }
                ],
                "additionalContactDetails": {
                    "emails": [{"email": "d@example.com", "type": "WORK"}],
                    "birthday": "2012-08-18",
                },
            }
        ],
    },
    "URL": {
        "type": "URL",
        "markdownText": "You can download our app from this link.",
        "mediaUrl": "https://apps.example/details?id=1",
    },
    "BUTTON": {
        "type": "BUTTON",
        "markdownText": "Hi",
        "buttonMessageType": "BUTTON",
        "additionalDetails": {"interactive": {"type": "list", "button": "Main Menu"}},
        "buttons": [
            {
                "type": "String",
                "title": "Button 1",
                "payload": "{{$guid}}",
                "additionalButtonDetails": {"sectionNo": 1, "sectionTitle": "menu 1"},
            },
            {"type": "String", "title": "Button 2", "payload": "b2"},
        ],
    },
    "WRAPUP": {
        "markdownText": " ",
        "type": "WRAPUP",
        "wrapups": [
            {"categoryName": "Category1", "value": "internet disconnectivity"},
            {"categoryName": "Category2", "value": "plan upgradation"},
        ],
        "note": "optional",
    },
}

MEDIA = {"IMAGE", "VIDEO", "AUDIO", "FILE", "STICKER"}


def typed(name: str) -> dict[str, Any]:
    """What the hub should store and echo for PUBLIC_BODIES[name], in REST spelling."""
    body = {k: v for k, v in PUBLIC_BODIES[name].items() if v is not None and k != "type"}
    if name == "PLAIN":
        return {"plain": body}
    if name in MEDIA:
        body["attachment"] = {k: v for k, v in body["attachment"].items() if v is not None}
        return {"media": {"kind": name, **body}}
    if name == "LOCATION":
        details = body.pop("additionalDetails")
        place = {"name": details["name"], "address": details["address"]}
        return {"location": {**body.pop("location"), **place, "additionalDetails": details}}
    if name == "CONTACT":
        shared = copy.deepcopy(body.pop("contacts"))
        return {"contact": {"sharedContacts": shared}}
    if name == "URL":
        return {"url": {"markdownText": body["markdownText"], "url": body["mediaUrl"]}}
    if name == "BUTTON":
        buttons = [
            {("label" if k == "title" else k): v for k, v in b.items()} for b in body.pop("buttons")
        ]
        return {"button": {**body, "buttons": buttons}}
    return {"wrapUp": {"markdownText": " ", "wrapups": body["wrapups"], "notes": "optional"}}


def activity(body: dict[str, Any], customer: str = "c-forms") -> dict[str, Any]:
    return {
        "header": {
            "sender": {"id": "crm-app", "type": "APP", "senderName": "CRM"},
            "customer": {"id": customer},
        },
        "body": body,
    }


async def _call(hub: Any, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with (
        rest_session() as http,
        http.request(method, f"http://127.0.0.1:{hub.http_port}{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


def _fields(reply: dict[str, Any]) -> list[str]:
    return [e["field"] for e in reply.get("errors", [])]


# -- CIM bodies in the public form -------------------------------------------------------


async def test_every_public_body_type_is_accepted_over_rest_and_kept_typed(db_url: str) -> None:
    async with running_hub(db_url) as hub:
        echoed: dict[str, Any] = {}
        for name, body in PUBLIC_BODIES.items():
            status, reply = await _call(hub, "POST", ACTIVITIES, activity(body))
            assert status == 200, (name, reply)
            echoed[name] = reply["data"]["activity"]["message"]["body"]
        status, listed = await _call(hub, "GET", f"{ACTIVITIES}?customerId=c-forms&pageSize=50")
    assert status == 200
    stored = {a["id"]: a["message"]["body"] for a in listed["results"]}
    assert len(stored) == len(PUBLIC_BODIES) == 11
    for name in PUBLIC_BODIES:
        assert echoed[name] == typed(name), name
    # Newest first: the list holds the same bodies the pushes echoed.
    assert list(stored.values()) == [echoed[n] for n in reversed(PUBLIC_BODIES)]


async def test_the_typed_echo_is_accepted_as_it_stands(db_url: str) -> None:
    async with running_hub(db_url) as hub:
        for name, body in PUBLIC_BODIES.items():
            _, first = await _call(hub, "POST", ACTIVITIES, activity(body))
            again = first["data"]["activity"]["message"]["body"]
            status, second = await _call(hub, "POST", ACTIVITIES, activity(again))
            assert status == 200, (name, second)
            assert second["data"]["activity"]["message"]["body"] == again, name


async def test_public_bodies_over_grpc(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = sg.SessionServiceStub(channel)
        replies = {}
        for name, body in PUBLIC_BODIES.items():
            message = parse(activity(body), c.CimMessage)
            replies[name] = await stub.PushActivity(s.PushActivityRequest(activity=message))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            wrong = c.CimMessage()
            wrong.CopyFrom(replies["PLAIN"].activity.message)
            wrong.body.Clear()
            wrong.body.type = "PLAIN"
            wrong.body.caption = "not for text"
            await stub.PushActivity(s.PushActivityRequest(activity=wrong))
    echoed = {name: to_json(r.activity.message.body) for name, r in replies.items()}
    assert echoed == {name: typed(name) for name in PUBLIC_BODIES}
    plain = replies["PLAIN"].activity.message.body
    assert plain.WhichOneof("content") == "plain" and plain.plain.markdown_text == "Hi"
    assert plain.type == ""
    image = replies["IMAGE"].activity.message.body.media
    assert image.kind == c.MEDIA_KIND_IMAGE and image.attachment.size == 41047
    assert image.additional_details.struct_value["timestamp"] == "1652080145"
    buttons = replies["BUTTON"].activity.message.body.button.buttons
    assert [b.label for b in buttons] == ["Button 1", "Button 2"]
    assert buttons[0].additional_button_details["sectionNo"] == 1
    wrap_up = replies["WRAPUP"].activity.message.body.wrap_up
    assert [w.category_name for w in wrap_up.wrapups] == ["Category1", "Category2"]
    assert wrap_up.notes == "optional"
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "activity.body.caption" in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "CAROUSEL", "markdownText": "x"}, "activity.body.type"),
        ({"type": "PLAIN", "markdownText": "x", "caption": "y"}, "activity.body.caption"),
        ({"type": "URL", "mediaUrl": "https://a.example", "note": "n"}, "activity.body.note"),
        ({"type": "IMAGE", "plain": {"markdownText": "x"}}, "activity.body.plain"),
        ({"type": "PLAIN", "markdownTxt": "x"}, "activity.body.markdownTxt"),
        ({"markdownText": "no type"}, "activity.body.markdownText"),
        (
            {"type": "IMAGE", "attachment": {"mediaUrl": "https://a.example", "colour": 1}},
            "activity.body.attachment.colour",
        ),
    ],
    ids=[
        "unknown-type",
        "wrong-field",
        "field-of-other-type",
        "typed-and-public",
        "unknown-field",
        "public-field-without-type",
        "unknown-nested-field",
    ],
)
async def test_bad_public_bodies_are_400_naming_the_field(
    db_url: str, body: dict[str, Any], field: str
) -> None:
    async with running_hub(db_url) as hub:
        status, reply = await _call(hub, "POST", ACTIVITIES, activity(body))
        _, listed = await _call(hub, "GET", f"{ACTIVITIES}?customerId=c-forms")
        health, _ = await _call(hub, "GET", "/healthz")
    assert health == 200
    assert status == 400, reply
    assert _fields(reply) == [field]
    assert listed["results"] == []


# -- the single-send receipt --------------------------------------------------------------


async def test_single_send_reply_carries_data_id(db_url: str) -> None:
    send = {
        "channelId": "sandbox",
        "to": {"phone": "+15550001111"},
        "type": "text",
        "text": {"body": "hello"},
    }
    async with running_hub(db_url) as hub:
        status, reply = await _call(hub, "POST", "/api/v1/message/send", send)
        data = reply["data"]
        got, found = await _call(hub, "GET", f"/api/v1/messages/{data['id']}")
        async with rest_session() as http:
            resp = await http.get(f"http://127.0.0.1:{hub.http_port}/openapi.json")
            spec = await resp.json()
    assert status == 200, reply
    assert data["id"] and data["id"] == data["messageId"]
    assert {"status", "channelId"} <= data.keys()
    assert got == 200 and found["data"]["message"]["id"] == data["id"]
    schemas = spec["components"]["schemas"]
    receipt = next(v for k, v in schemas.items() if k.endswith("SendMessageResponse"))
    assert {"id", "messageId"} <= receipt["properties"].keys()


async def test_single_send_answers_200_with_the_receipt_envelope(db_url: str) -> None:
    """The public reference gives the single send's success as 200 OK with an
    ApiResponse of an OutBoundReciept; the batch send keeps 202 Accepted."""
    send = {
        "channelId": "sandbox",
        "to": {"phone": "+15550002222"},
        "type": "text",
        "text": {"body": "hello"},
    }
    async with running_hub(db_url) as hub:
        status, reply = await _call(hub, "POST", "/api/v1/message/send", send)
        async with rest_session() as http:
            resp = await http.get(f"http://127.0.0.1:{hub.http_port}/openapi.json")
            spec = await resp.json()
    assert status == 200, reply
    assert reply["status"] == 200 and reply["statusKey"] == "SUCCESS", reply
    assert reply["message"] == "OK", reply
    assert isinstance(reply["timestamp"], int) and reply["traceid"], reply
    assert reply["data"]["id"], reply
    successes = {
        path: sorted(c for c in spec["paths"][path]["post"]["responses"] if c.startswith("2"))
        for path in ("/api/v1/message/send", "/api/v2/message/send")
    }
    assert successes == {"/api/v1/message/send": ["200"], "/api/v2/message/send": ["202"]}
    ok = spec["paths"]["/api/v1/message/send"]["post"]["responses"]["200"]
    envelope = ok["content"]["application/json"]["schema"]
    assert {"status", "statusKey", "data", "timestamp", "traceid"} <= set(envelope["required"])
    assert envelope["properties"]["data"]["$ref"].endswith("SendMessageResponse")


# -- contacts known only from their language ---------------------------------------------


async def test_contact_known_only_from_prefs_lang_is_a_contact(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        status, _ = await _call(
            hub, "POST", "/api/v1/contact/prefs/lang", {"contactId": "fb:77", "lang": "de_DE"}
        )
        got, one = await _call(hub, "GET", "/api/v1/contacts/fb:77")
        _, listed = await _call(hub, "GET", "/api/v1/contacts")
        # The language set again later is the same contact, not a second one.
        await cust_grpc.CustomerServiceStub(channel).UpdateContactPrefs(
            cust.UpdateContactPrefsRequest(contact_id="fb:77", lang="fr_FR")
        )
        _, again = await _call(hub, "GET", "/api/v1/contacts")
    assert status == 200
    assert got == 200 and one["data"]["contact"]["contactId"] == "fb:77"
    assert one["data"]["contact"]["lang"] == "de_DE"
    assert [(x["contactId"], x["lang"]) for x in listed["results"]] == [("fb:77", "de_DE")]
    assert [(x["contactId"], x["lang"]) for x in again["results"]] == [("fb:77", "fr_FR")]


async def test_migration_gives_language_only_contacts_a_contact_row(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        await migrate.upgrade(engine, "0007")
        async with engine.begin() as conn:
            await conn.execute(
                insert(contact_prefs).values(
                    tenant_id="default", contact_id="wa:5", lang="es_ES", updated_at=1700
                )
            )
            await conn.execute(
                insert(contacts).values(
                    tenant_id="default",
                    contact_id="wa:6",
                    contact_type="",
                    channel_id="whatsapp",
                    csid="",
                    lane="",
                    profile={"name": "Six"},
                    business_profile={},
                    created_at=10,
                    updated_at=10,
                )
            )
            await conn.execute(
                insert(contact_prefs).values(
                    tenant_id="default", contact_id="wa:6", lang="it_IT", updated_at=1800
                )
            )
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            rows = (await conn.execute(select(contacts).order_by(contacts.c.contact_id))).all()
    finally:
        await engine.dispose()
    assert [(r.contact_id, r.channel_id, r.profile, r.created_at) for r in rows] == [
        ("wa:5", "", {}, 1700),
        ("wa:6", "whatsapp", {"name": "Six"}, 10),
    ]
