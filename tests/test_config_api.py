"""Seed-002 configuration and customer endpoints, global variables and templates."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.sandbox import SandboxAdapter
from support.clock import eventually
from support.hub import rest_session, running_hub

# The public API's examples, as written (numbers where strings are declared included).
SEED_LINK = {"linkName": "string", "linkType": "string", "linkValue": "string"}
SEED_EXAMPLES: list[tuple[str, str, Any]] = [
    ("GET", "/api/v1/config/channels?sabdnox=true", None),
    ("GET", "/api/v1/config/global/vars?channelId=sandbox-sms", None),
    ("GET", "/api/v1/config/tmpl/hsm?channelId=sandbox-sms&channelStatus=APPROVED", None),
    ("POST", "/api/v1/config/webhook", {"url": ""}),
    ("POST", "/api/v1/contact/prefs/lang", {"contactId": "fb:12121212121", "lang": "en_US"}),
    (
        "POST",
        "/api/v1/data/push",
        {"data": {}, "id": "string", "links": [SEED_LINK], "type": "string"},
    ),
    (
        "POST",
        "/api/v1/event/push",
        {"eventName": "CUSTOMER_CREATED", "id": 1234567, "links": [SEED_LINK]},
    ),
]


async def _call(hub: Any, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with (
        rest_session() as http,
        http.request(method, f"http://127.0.0.1:{hub.http_port}{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


def _is_envelope(reply: dict[str, Any], status: int) -> bool:
    common = {"status", "statusKey", "message", "timestamp", "traceid"} <= reply.keys()
    shaped = "data" in reply or ("results" in reply and "meta" in reply)
    return common and shaped and reply["status"] == status and reply["statusKey"] == "SUCCESS"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    SEED_EXAMPLES,
    ids=[p.partition("?")[0] for _, p, _ in SEED_EXAMPLES],
)
async def test_seed_example_is_accepted_and_answered_in_the_envelope(
    db_url: str, method: str, path: str, body: Any
) -> None:
    async with running_hub(db_url) as hub:
        status, reply = await _call(hub, method, path, body)
    assert status == 200, reply
    assert _is_envelope(reply, 200), reply
    endpoint = path.partition("?")[0]
    if endpoint == "/api/v1/config/channels":
        assert {"sandbox", "sandbox-sms"} <= {c["channelId"] for c in reply["results"]}
    elif endpoint == "/api/v1/config/webhook":
        data = reply["data"]
        assert data["type"] == "WEBHOOK" and data["secret"]["signingSecret"].startswith("whsec_")
    elif endpoint == "/api/v1/contact/prefs/lang":
        [event] = reply["results"]
        assert event["eventCode"] == "CONTACT_PREFS_UPDATED"
        assert event["contactId"] == "fb:12121212121"
        assert event["trace"] == [{"lang": "en_US"}]
    elif endpoint == "/api/v1/data/push":
        assert reply["data"]["links"] == [SEED_LINK] and reply["data"]["id"] == "string"
    elif endpoint == "/api/v1/event/push":
        assert reply["data"]["id"] == "1234567"
        assert reply["data"]["eventName"] == "CUSTOMER_CREATED"
    else:
        assert reply["results"] == [] and isinstance(reply["meta"], dict)


async def test_global_vars_resolve_with_channel_override_and_destination_first(
    db_url: str,
) -> None:
    sms = SandboxAdapter("sandbox-sms", delivery_delay=0.01, record=True)
    single = SandboxAdapter("sandbox", delivery_delay=0.01, record=True)
    async with running_hub(db_url, adapters={"sandbox-sms": sms, "sandbox": single}) as hub:
        for body in (
            {"key": "greeting", "value": "Hello"},
            {"key": "brand", "value": "ACME", "description": "shown in every text"},
            {"key": "greeting", "value": "Hi", "channelId": "sandbox-sms"},
        ):
            status, reply = await _call(hub, "POST", "/api/v1/config/global/vars", body)
            assert status == 200, reply
        status, listed = await _call(hub, "GET", "/api/v1/config/global/vars?channelId=sandbox-sms")
        assert status == 200
        effective = {v["key"]: (v["value"], v["type"]) for v in listed["results"]}
        assert effective == {"brand": ("ACME", "TENANT"), "greeting": ("Hi", "CHANNEL")}

        batch = {
            "channel": "sms",
            "from": "CNNECT",
            "to": [
                {"msisdn": ["+447911100001"]},
                {"msisdn": ["+447911100002"], "substitutions": {"greeting": "Yo"}},
            ],
            "content": {"type": "text", "text": "$(greeting) from $(brand)"},
        }
        status, reply = await _call(hub, "POST", "/api/v2/message/send", batch)
        assert status == 202, reply
        single_send = {
            "channelId": "sandbox",
            "type": "text",
            "to": {"phone": "+447911100003"},
            "text": {"body": "$(greeting) from $(brand), $(unknown) stays"},
        }
        status, reply = await _call(hub, "POST", "/api/v1/message/send", single_send)
        assert status == 200, reply
        await eventually(lambda: len(sms.sent) == 2 and len(single.sent) == 1)
        status, _ = await _call(hub, "DELETE", "/api/v1/config/global/vars/brand")
        assert status == 200
        status, gone = await _call(hub, "DELETE", "/api/v1/config/global/vars/brand")
    by_destination = {d.destination: d.text for d in sms.sent}
    assert by_destination == {"+447911100001": "Hi from ACME", "+447911100002": "Yo from ACME"}
    assert single.sent[0].text == "Hello from ACME, $(unknown) stays"
    assert status == 404 and gone["messageKey"] == "GLOBAL_VAR_NOT_FOUND"


def _template(code: str, lang: str, body: str, status: str) -> dict[str, Any]:
    return {
        "code": code,
        "lang": lang,
        "category": "UTILITY",
        "body": body,
        "footer": "Reply STOP to opt out",
        "buttons": [{"type": "QUICK_REPLY", "label": "Yes", "code": "YES"}],
        "approved": [{"channelId": "sandbox", "status": status}],
    }


async def test_pending_template_is_refused_and_approved_one_uses_the_contact_language(
    db_url: str,
) -> None:
    single = SandboxAdapter("sandbox", delivery_delay=0.01, record=True)
    tmpl = "/api/v1/config/tmpl/hsm"
    async with running_hub(db_url, adapters={"sandbox": single}) as hub:
        created = []
        for t in (
            _template("FEEDBACK", "en_US", "Thanks $(name), you paid $(amount)", "APPROVED"),
            _template("FEEDBACK", "es_ES", "Gracias $(name), pagaste $(amount)", "APPROVED"),
            _template("PROMO", "es_ES", "Oferta para $(name)", "PENDING"),
        ):
            status, reply = await _call(hub, "POST", tmpl, t)
            assert status == 201, reply
            created.append(reply["data"]["template"])
        status, dup = await _call(hub, "POST", tmpl, _template("PROMO", "es_ES", "x", "PENDING"))
        assert status == 409 and dup["messageKey"] == "TEMPLATE_EXISTS"
        status, _ = await _call(
            hub, "POST", "/api/v1/contact/prefs/lang", {"contactId": "fb:42", "lang": "es_ES"}
        )
        assert status == 200

        def send(code: str) -> dict[str, Any]:
            return {
                "channelId": "sandbox",
                "type": "template",
                "to": {"contactId": "fb:42", "phone": "+447911100009"},
                "template": {"code": code, "data": {"name": "Ana", "amount": 10}},
            }

        status, refused = await _call(hub, "POST", "/api/v1/message/send", send("PROMO"))
        ok_status, sent = await _call(hub, "POST", "/api/v1/message/send", send("FEEDBACK"))
        await eventually(lambda: len(single.sent) == 1)
        status_pending, pending = await _call(
            hub, "GET", f"{tmpl}?channelId=sandbox&channelStatus=PENDING"
        )
        # Approving the PROMO template makes it sendable.
        promo = {**created[2], "approved": [{"channelId": "sandbox", "status": "APPROVED"}]}
        promo.pop("createdStamp", None)
        upd_status, updated = await _call(hub, "PUT", f"{tmpl}/{promo['id']}", promo)
        again_status, _ = await _call(hub, "POST", "/api/v1/message/send", send("PROMO"))
        del_status, _ = await _call(hub, "DELETE", f"{tmpl}/{created[0]['id']}")
        _, remaining = await _call(hub, "GET", tmpl)
    assert status == 400 and refused["messageKey"] == "TEMPLATE_NOT_APPROVED"
    assert ok_status == 200, sent
    assert single.sent[0].text == "Gracias Ana, pagaste 10"
    assert single.sent[0].content.template.language == "es_ES"
    assert status_pending == 200 and [t["code"] for t in pending["results"]] == ["PROMO"]
    assert pending["results"][0]["approved"][0]["status"] == "PENDING"
    assert upd_status == 200 and updated["data"]["template"]["approved"][0]["status"] == "APPROVED"
    assert again_status == 200
    assert del_status == 200
    assert [(t["code"], t["lang"]) for t in remaining["results"]] == [
        ("FEEDBACK", "es_ES"),
        ("PROMO", "es_ES"),
    ]


async def test_declared_field_rules_are_enforced_with_json_paths(db_url: str) -> None:
    async with running_hub(db_url) as hub:
        long_id, too_long = await _call(
            hub, "POST", "/api/v1/contact/prefs/lang", {"contactId": "x" * 257, "lang": "en"}
        )
        empty, missing = await _call(
            hub,
            "POST",
            "/api/v1/event/push",
            {"eventName": "", "id": 1, "links": [{"linkValue": "v" * 300}]},
        )
    assert long_id == 400 and [e["field"] for e in too_long["errors"]] == ["contactId"]
    assert empty == 400
    assert {e["field"] for e in missing["errors"]} == {"eventName", "links[0].linkValue"}


async def test_batch_template_by_code_uses_each_contacts_language(db_url: str) -> None:
    sms = SandboxAdapter("sandbox-sms", delivery_delay=0.01, record=True)
    tmpl = "/api/v1/config/tmpl/hsm"
    async with running_hub(db_url, adapters={"sandbox-sms": sms}) as hub:
        for lang, body, status in (
            ("en", "Hello $(name)", "APPROVED"),
            ("es", "Hola $(name)", "APPROVED"),
            ("fr", "Bonjour $(name)", "PENDING"),
        ):
            t = _template("GREET", lang, body, status)
            t["approved"] = [{"channelId": "sandbox-sms", "status": status}]
            created, reply = await _call(hub, "POST", tmpl, t)
            assert created == 201, reply
        for contact, lang in (("+447911100011", "es"), ("+447911100012", "fr")):
            await _call(
                hub, "POST", "/api/v1/contact/prefs/lang", {"contactId": contact, "lang": lang}
            )
        batch = {
            "channel": "sms",
            "from": "CNNECT",
            "to": [
                {"msisdn": [f"+4479111000{i}"], "substitutions": {"name": f"N{i}"}}
                for i in (10, 11, 12)
            ],
            "template": {"code": "GREET"},
        }
        status, reply = await _call(hub, "POST", "/api/v2/message/send", batch)
        assert status == 202, reply
        await eventually(lambda: len(sms.sent) == 3)
    texts = {d.destination: d.text for d in sms.sent}
    # No preference: the default version; a preferred version not approved: the default too.
    assert texts == {
        "+447911100010": "Hello N10",
        "+447911100011": "Hola N11",
        "+447911100012": "Hello N12",
    }


async def test_a_single_send_chooses_the_template_version_as_a_batch_does(db_url: str) -> None:
    sms = SandboxAdapter("sandbox-sms", delivery_delay=0.01, record=True)
    tmpl = "/api/v1/config/tmpl/hsm"
    async with running_hub(db_url, adapters={"sandbox-sms": sms}) as hub:
        for lang, body, status in (
            ("en", "Hello $(name)", "APPROVED"),
            ("es", "Hola $(name)", "APPROVED"),
            ("fr", "Bonjour $(name)", "PENDING"),
        ):
            t = _template("GREET", lang, body, status)
            t["approved"] = [{"channelId": "sandbox-sms", "status": status}]
            created, reply = await _call(hub, "POST", tmpl, t)
            assert created == 201, reply
        for contact, lang in (("+447911100021", "es"), ("+447911100022", "fr")):
            await _call(
                hub, "POST", "/api/v1/contact/prefs/lang", {"contactId": contact, "lang": lang}
            )
        for n in (20, 21, 22):
            send = {
                "channelId": "sandbox-sms",
                "type": "template",
                "to": {"phone": f"+4479111000{n}"},
                "template": {"code": "GREET", "data": {"name": f"N{n}"}},
            }
            status, reply = await _call(hub, "POST", "/api/v1/message/send", send)
            assert status == 200, reply
        await eventually(lambda: len(sms.sent) == 3)
    texts = {d.destination: d.text for d in sms.sent}
    # The same choices as the batch above: the contact's version where it is
    # approved on the channel, else the default one, never a refusal.
    assert texts == {
        "+447911100020": "Hello N20",
        "+447911100021": "Hola N21",
        "+447911100022": "Hello N22",
    }


async def test_templates_and_vars_page_through(db_url: str) -> None:
    tmpl = "/api/v1/config/tmpl/hsm"
    async with running_hub(db_url) as hub:
        for code in ("A", "B", "C"):
            await _call(hub, "POST", tmpl, _template(code, "en", "x", "APPROVED"))
            await _call(hub, "POST", "/api/v1/config/global/vars", {"key": code, "value": code})
        codes: list[str] = []
        keys: list[str] = []
        for path, into, field in (
            (tmpl, codes, "code"),
            ("/api/v1/config/global/vars", keys, "key"),
        ):
            token = ""
            for _ in range(3):
                query = f"?pageSize=2&pageToken={token}" if token else "?pageSize=2"
                status, page = await _call(hub, "GET", path + query)
                assert status == 200, page
                into.extend(item[field] for item in page["results"])
                token = page["meta"].get("nextPageToken", "")
                if not token:
                    break
    assert codes == ["A", "B", "C"] and keys == ["A", "B", "C"]
