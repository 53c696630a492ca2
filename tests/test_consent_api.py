"""The consent API over REST, keyword spelling, and one-click email unsubscribe."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from fakes.providers import HappyProvider
from server.app import Hub
from server.domain.consent import ConsentSettings, KeywordAction, classify
from support.clock import eventually
from support.hub import AUTH_HEADERS, rest_call, running_hub

NUMBERS = [f"+4479111234{i:02d}" for i in range(10, 15)]
EMAIL = "ana@example.org"


def consents_path(channel: str, address: str) -> str:
    return f"/api/v1/consents/{channel}/{quote(address, safe='')}"


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("STOP", KeywordAction.OPT_OUT),
        ("stop", KeywordAction.OPT_OUT),
        ("  Stop!!  ", KeywordAction.OPT_OUT),
        ("\tstop.\n", KeywordAction.OPT_OUT),
        ("StopAll", KeywordAction.OPT_OUT),
        ("unsubscribe", KeywordAction.OPT_OUT),
        ("END", KeywordAction.OPT_OUT),
        ("quit", KeywordAction.OPT_OUT),
        ("Cancel", KeywordAction.OPT_OUT),
        ("revoke", KeywordAction.OPT_OUT),
        ("OPTOUT", KeywordAction.OPT_OUT),
        ("opt-out", KeywordAction.OPT_OUT),
        ("Opt out", KeywordAction.OPT_OUT),
        ("remove", KeywordAction.OPT_OUT),
        ("ARRET", KeywordAction.OPT_OUT),
        ("Arrêt", KeywordAction.OPT_OUT),
        ("arrêt !", KeywordAction.OPT_OUT),
        ("\uff33\uff34\uff2f\uff30", KeywordAction.OPT_OUT),  # full-width STOP
        ("baja", KeywordAction.OPT_OUT),
        ("Alto", KeywordAction.OPT_OUT),
        ("parar", KeywordAction.OPT_OUT),
        ("Stopp", KeywordAction.OPT_OUT),
        ("START", KeywordAction.OPT_IN),
        ("unstop", KeywordAction.OPT_IN),
        ("Yes.", KeywordAction.OPT_IN),
        ("help", KeywordAction.HELP),
        ("INFO?", KeywordAction.HELP),
        ("stop it", None),
        ("please stop", None),
        ("stopped", None),
        ("", None),
        ("!!!", None),
        ("STOP" + " " * 70, None),
    ],
)
def test_keyword_spellings(text: str, action: KeywordAction | None) -> None:
    found = classify(text, ConsentSettings())
    assert (found.action if found else None) == action
    if found:
        assert found.word == text.strip()


def test_a_tenant_list_replaces_the_built_in_one() -> None:
    settings = ConsentSettings(opt_out_keywords=("Désinscrire",), opt_in_keywords=("Go",))
    assert classify("desinscrire", settings).action is KeywordAction.OPT_OUT  # type: ignore[union-attr]
    assert classify("GO!", settings).action is KeywordAction.OPT_IN  # type: ignore[union-attr]
    assert classify("STOP", settings) is None
    assert classify("help", settings).action is KeywordAction.HELP  # type: ignore[union-attr]


async def set_consent(hub: Hub, headers: dict[str, str], address: str, **body: Any) -> Any:
    status, reply = await rest_call(hub, "POST", consents_path("sms", address), headers, body)
    assert status == 200, reply
    assert "data" in reply, reply
    return reply["data"]["consent"]


async def test_set_get_and_list_with_paging_filters_and_tenants(db_url: str) -> None:
    async with running_hub(db_url) as hub:
        await hub.store.keys.create_tenant("tenant-b")
        b_key = await hub.store.keys.create_api_key("tenant-b")
        b_headers = {"x-api-id": b_key.api_id, "x-api-key": b_key.secret}
        for number in NUMBERS:
            await set_consent(hub, AUTH_HEADERS, number, state="OPTED_OUT", reason="by phone")
        # A change of mind, and a category: both in the history of the first number.
        await set_consent(hub, AUTH_HEADERS, NUMBERS[0], state="OPTED_IN", reason="called back")
        entry = await set_consent(
            hub, AUTH_HEADERS, NUMBERS[0], state="OPTED_OUT", scope="Marketing"
        )
        status, got = await rest_call(hub, "GET", consents_path("SMS", NUMBERS[0]), AUTH_HEADERS)

        pages, token = [], ""
        while True:
            query = f"?pageSize=2&state=OPTED_OUT&channelType=sms&source=API&pageToken={token}"
            s, page = await rest_call(hub, "GET", "/api/v1/consents" + query, AUTH_HEADERS)
            assert s == 200, page
            pages.append([r["address"] for r in page["results"]])
            token = page["meta"].get("nextPageToken", "")
            if not token:
                break
        _, opted_in = await rest_call(hub, "GET", "/api/v1/consents?state=OPTED_IN", AUTH_HEADERS)
        _, by_email = await rest_call(
            hub, "GET", "/api/v1/consents?channelType=EMAIL", AUTH_HEADERS
        )
        # Another tenant sees nothing of it, and its own change stays its own.
        b_status, b_got = await rest_call(hub, "GET", consents_path("SMS", NUMBERS[0]), b_headers)
        _, b_list = await rest_call(hub, "GET", "/api/v1/consents", b_headers)
        await set_consent(hub, b_headers, NUMBERS[1], state="OPTED_IN")
        _, still = await rest_call(hub, "GET", consents_path("SMS", NUMBERS[1]), AUTH_HEADERS)
        bad_status, bad = await rest_call(
            hub, "POST", consents_path("sms", "not a number"), AUTH_HEADERS, {"state": "OPTED_OUT"}
        )
        no_state, _ = await rest_call(
            hub, "POST", consents_path("sms", NUMBERS[2]), AUTH_HEADERS, {}
        )

    assert entry["scope"] == "marketing" and entry["source"] == "API"
    assert status == 200, got
    data = got["data"]
    assert {(e["scope"], e["state"]) for e in data["consents"]} == {
        ("all", "OPTED_IN"),
        ("marketing", "OPTED_OUT"),
    }
    assert [(h["scope"], h["state"], h.get("reason", "")) for h in data["history"]] == [
        ("all", "OPTED_OUT", "by phone"),
        ("all", "OPTED_IN", "called back"),
        ("marketing", "OPTED_OUT", ""),
    ]
    # Oldest first, two at a time; the first number's 'all' entry is opted in now.
    assert pages == [NUMBERS[1:3], NUMBERS[3:5], [NUMBERS[0]]]
    assert [r["address"] for r in opted_in["results"]] == [NUMBERS[0]]
    assert by_email["results"] == []
    assert b_status == 404, b_got
    assert b_list["results"] == []
    assert [e["state"] for e in still["data"]["consents"]] == ["OPTED_OUT"]
    assert bad_status == 400, bad
    assert no_state == 400


async def test_one_click_unsubscribe_records_only_a_signed_post(db_url: str) -> None:
    provider = HappyProvider()
    send = {
        "channel": "email",
        "from": "offers@brand.example.org",
        "to": [{"email": [EMAIL]}],
        "content": {"type": "text", "subject": "Offers", "text": "Hello"},
        "category": "marketing",
    }
    async with running_hub(db_url, adapters={"sandbox-email": provider}) as hub:
        status, _ = await rest_call(hub, "POST", "/api/v2/message/send", AUTH_HEADERS, send)
        assert status == 202
        await eventually(lambda: len(provider.attempts) == 1)
        link = provider.attempts[0].content.list_unsubscribe
        assert link.startswith(f"http://127.0.0.1:{hub.http_port}/unsubscribe/")
        path = link.removeprefix(f"http://127.0.0.1:{hub.http_port}")
        body, mac = path.removeprefix("/unsubscribe/").split(".")
        forged = f"/unsubscribe/{body}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
        async with aiohttp.ClientSession() as http:  # no API key: mail clients have none
            url = f"http://127.0.0.1:{hub.http_port}"
            async with http.get(url + path) as page:
                page_status, page_text = page.status, await page.text()
            _, after_get = await rest_call(hub, "GET", consents_path("email", EMAIL), AUTH_HEADERS)
            async with http.post(url + forged, data={"List-Unsubscribe": "One-Click"}) as refused:
                refused_status = refused.status
            _, after_forged = await rest_call(
                hub, "GET", consents_path("email", EMAIL), AUTH_HEADERS
            )
            async with http.post(url + path, data={"List-Unsubscribe": "One-Click"}) as done:
                done_status = done.status
        _, after_post = await rest_call(hub, "GET", consents_path("email", EMAIL), AUTH_HEADERS)
        status, again = await rest_call(hub, "POST", "/api/v2/message/send", AUTH_HEADERS, send)
        transactional = {**send, "category": "transactional"}
        _, receipt = await rest_call(
            hub, "POST", "/api/v2/message/send", AUTH_HEADERS, transactional
        )

    assert page_status == 200 and 'method="post"' in page_text
    assert after_get["status"] == 404  # a GET (a link scanner) changed nothing
    assert refused_status == 403
    assert after_forged["status"] == 404
    assert done_status == 200
    [entry] = after_post["data"]["consents"]
    assert (entry["scope"], entry["state"], entry["source"]) == (
        "marketing",
        "OPTED_OUT",
        "EMAIL_ONE_CLICK",
    )
    assert again["results"][0]["error"] == "OPTED_OUT"
    assert receipt["results"][0].get("error", "") == ""
