"""/openapi.json: a valid OpenAPI 3.1 document that lists exactly the routes served."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from adapters.registry import PROVIDERS
from server.gateway.app import MAX_HEADER_VALUE
from server.gateway.openapi import build_openapi
from server.gateway.routes import build_routes
from server.gateway.schemas import int_text_pattern
from support.hub import rest_session, running_hub
from support.inbound import TOKEN, inbound_hub

_PLACEHOLDER = re.compile(r"\{[^}]+\}")


def _shape(path: str) -> str:
    return _PLACEHOLDER.sub("{}", path)


async def _get(url: str) -> tuple[int, str, bytes]:
    # No credentials: the document and the docs page are public.
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, resp.content_type, await resp.read()


async def test_openapi_is_valid_3_1_and_matches_the_route_table(tmp_path: Any) -> None:
    async with running_hub(f"sqlite+aiosqlite:///{tmp_path}/hub.db") as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        async with aiohttp.ClientSession() as http, http.get(f"{base}/openapi.json") as resp:
            assert resp.status == 200
            spec = await resp.json()
        served = {
            (route.method, _shape(route.resource.canonical))
            for route in hub.http_runner.app.router.routes()
            if route.resource is not None
        }
    validate(spec, cls=OpenAPIV31SpecValidator)
    assert spec["openapi"].startswith("3.1")
    documented = {
        (method.upper(), _shape(path))
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options")
    }
    assert documented == served, (documented - served, served - documented)
    schemes = spec["components"]["securitySchemes"]
    assert (schemes["apiId"]["name"], schemes["apiKey"]["name"]) == ("x-api-id", "x-api-key")
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


async def test_schemas_come_from_the_protos_and_responses_are_enveloped(tmp_path: Any) -> None:
    async with running_hub(f"sqlite+aiosqlite:///{tmp_path}/hub.db") as hub:
        spec = json.loads((await _get(f"http://127.0.0.1:{hub.http_port}/openapi.json"))[2])
    schemas = spec["components"]["schemas"]
    template = schemas["cim.v1.Template"]["properties"]
    assert {"code", "lang", "body", "approved", "createdStamp"} <= template.keys()
    approval = schemas["cim.v1.TemplateApproval"]["properties"]["status"]
    assert approval == {"type": "string", "enum": ["APPROVED", "PENDING", "REJECTED"]}
    templates = spec["paths"]["/api/v1/config/tmpl/hsm"]
    listed = templates["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["properties"]["results"]["items"] == {
        "$ref": "#/components/schemas/cim.v1.Template"
    }
    query = {p.get("name") for p in templates["get"]["parameters"]}
    assert {"channelId", "channelStatus"} <= query
    created = templates["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created["properties"]["data"] == {
        "$ref": "#/components/schemas/cim.v1.CreateTemplateResponse"
    }
    # One OpenAPI path per URL shape, whatever the proto calls the variable.
    by_template = spec["paths"]["/api/v1/config/tmpl/hsm/{template_id}"]
    assert {"put", "delete"} <= by_template.keys()
    assert by_template["put"]["parameters"][0]["name"] == "template_id"
    channel = spec["paths"]["/api/v1/config/channels/{channel_id}"]
    assert {"get", "put", "delete"} <= channel.keys()
    assert not any("." in name for path in spec["paths"] for name in re.findall(r"{([^}]*)}", path))
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert spec["paths"]["/metrics"]["get"]["security"] == []


async def test_docs_page_is_served_from_local_assets(tmp_path: Any) -> None:
    async with running_hub(f"sqlite+aiosqlite:///{tmp_path}/hub.db") as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        page = await _get(f"{base}/docs")
        script = await _get(f"{base}/docs/swagger-ui-bundle.js")
        missing = await _get(f"{base}/docs/..%2Fpackage.json")
    assert page[0] == 200 and page[1] == "text/html"
    assert b"/openapi.json" in page[2] and b"/docs/swagger-ui-bundle.js" in page[2]
    assert script[0] == 200 and b"SwaggerUI" in script[2]
    assert missing[0] == 404


def test_required_fields_and_length_caps_come_from_the_proto_options() -> None:
    spec = build_openapi(build_routes())
    push = spec["components"]["schemas"]["cim.v1.PushEventRequest"]
    assert push["required"] == ["eventName", "id"]
    assert push["properties"]["eventName"]["maxLength"] == 128
    assert push["properties"]["id"]["minLength"] == 1
    provider = spec["components"]["schemas"]["cim.v1.Channel"]["properties"]["provider"]
    assert all(re.match(provider["pattern"], name) for name in PROVIDERS)
    link = spec["components"]["schemas"]["cim.v1.DigitalObjectLink"]["properties"]
    assert link["linkValue"]["maxLength"] == 256
    prefs = spec["paths"]["/api/v1/contact/prefs/lang"]["post"]["requestBody"]
    assert prefs["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/cim.v1.UpdateContactPrefsRequest"
    }


# -- the document promises what the server enforces ------------------------------------

SEND = {
    "channelId": "sandbox",
    "type": "text",
    "to": {"phone": "+447700900123"},
    "text": {"body": "hi"},
}
BATCH = {
    "channel": "sms",
    "from": "CNNECT",
    "to": [{"msisdn": ["+447911100001"]}],
    "content": {"type": "text", "text": "hi"},
}
# (path, a body the server takes, the prefix its errors give the body's fields)
REQUIRED_SAMPLE: list[tuple[str, dict[str, Any], str]] = [
    ("/api/v1/message/send", SEND, ""),
    ("/api/v2/message/send", BATCH, ""),
    ("/api/v1/config/tmpl/hsm", {"code": "greet", "lang": "en", "body": "Hello"}, ""),
    ("/api/v1/config/global/vars", {"key": "brand", "value": "Acme"}, ""),
    (
        "/api/v1/config/channels",
        {"channelId": "c-doc", "contactType": "SMS", "provider": "sandbox"},
        "",
    ),
    ("/api/v1/contact/prefs/lang", {"contactId": "c1", "lang": "en"}, ""),
    ("/api/v1/data/push", {"id": "o1", "type": "order", "data": {}}, ""),
    ("/api/v1/event/push", {"eventName": "ORDERED", "id": "e1"}, ""),
    ("/api/v1/contact/info", {"contactId": "c1", "channelId": "sandbox"}, "contact."),
    ("/api/v1/session/routing", {"sessionId": "s-unknown", "queue": "sales"}, ""),
]


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _body_schema(spec: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return _resolve(spec, body)


async def _post(
    base: str, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    sent = {"x-verify-token": TOKEN, **(headers or {})}
    async with rest_session(headers=sent) as http, http.post(base + path, json=body) as resp:
        return resp.status, await resp.json()


def _fields(reply: dict[str, Any]) -> set[str]:
    return {e["field"] for e in reply.get("errors", [])}


def test_the_webhooks_take_the_verify_token_scheme_instead_of_an_api_key() -> None:
    spec = build_openapi(build_routes())
    scheme = spec["components"]["securitySchemes"]["verifyToken"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-verify-token")
    for path in ("/api/v1/message/receive", "/api/v1/contact/info"):
        assert spec["paths"][path]["post"]["security"] == [{"verifyToken": []}], path
    # Everything else keeps the document-wide API key or JWT.
    assert "security" not in spec["paths"]["/api/v1/message/send"]["post"]
    assert {"apiId": [], "apiKey": []} in spec["security"]


async def test_the_webhooks_need_the_token_and_no_api_key(db_url: str) -> None:
    body = {"contactId": "c1", "channelId": "sandbox"}
    async with inbound_hub(db_url) as hub:
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/contact/info"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=body, headers={"x-verify-token": TOKEN}) as resp:
                token_only = resp.status
            async with http.post(url, json=body) as resp:
                neither = resp.status
        async with rest_session() as http, http.post(url, json=body) as resp:
            key_only = resp.status
    assert (token_only, neither, key_only) == (200, 401, 401)


async def test_required_lists_are_what_the_server_refuses_without(db_url: str) -> None:
    spec = build_openapi(build_routes())
    checked: dict[str, list[str]] = {}
    async with inbound_hub(db_url) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        for path, valid, prefix in REQUIRED_SAMPLE:
            required = _body_schema(spec, path).get("required", [])
            assert required, path
            status, reply = await _post(base, path, valid)
            assert status != 400, (path, reply)
            for name in required:
                without = {k: v for k, v in valid.items() if k != name}
                status, reply = await _post(base, path, without)
                assert status == 400 and prefix + name in _fields(reply), (path, name, reply)
            checked[path] = required
    print("\nrequired, as documented and refused:", checked)


async def test_published_maxima_are_enforced_and_the_maximum_is_accepted(db_url: str) -> None:
    spec = build_openapi(build_routes())
    batch = _body_schema(spec, "/api/v2/message/send")["properties"]
    template = _resolve(spec, {"$ref": "#/components/schemas/cim.v1.Template"})["properties"]
    var = _body_schema(spec, "/api/v1/config/global/vars")["properties"]
    prefs = _body_schema(spec, "/api/v1/contact/prefs/lang")["properties"]
    idem = spec["components"]["parameters"]["IdempotencyKey"]["schema"]
    page = next(
        p["schema"]
        for p in spec["paths"]["/api/v1/messages"]["get"]["parameters"]
        if p.get("name") == "pageSize"
    )
    assert (page["minimum"], page["maximum"]) == (0, 500)
    assert batch["priority"]["maximum"] == 3 and batch["validity"]["maximum"] == 30 * 86400
    # (what is sent for a value, the field the 400 names, the published maximum, the answer at it)
    numbers = [
        (lambda n: {**BATCH, "priority": n}, "priority", batch["priority"]["maximum"]),
        (lambda n: {**BATCH, "validity": n}, "validity", batch["validity"]["maximum"]),
    ]
    texts = [
        (
            "/api/v1/config/tmpl/hsm",
            lambda v: {"code": "long", "lang": "en", "body": v},
            "body",
            template["body"]["maxLength"],
        ),
        (
            "/api/v1/config/global/vars",
            lambda v: {"key": "long", "value": v},
            "value",
            var["value"]["maxLength"],
        ),
        (
            "/api/v1/contact/prefs/lang",
            lambda v: {"contactId": v, "lang": "en"},
            "contactId",
            prefs["contactId"]["maxLength"],
        ),
    ]
    seen: list[tuple[str, int, int, int]] = []
    async with inbound_hub(db_url) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        for build, field, top in numbers:
            over, reply = await _post(base, "/api/v2/message/send", build(top + 1))
            assert over == 400 and field in _fields(reply), (field, reply)
            at, reply = await _post(base, "/api/v2/message/send", build(top))
            assert at == 202, (field, reply)
            seen.append((field, top, over, at))
        for path, build_text, field, top in texts:
            over, reply = await _post(base, path, build_text("x" * (top + 1)))
            assert over == 400 and field in _fields(reply), (field, reply)
            at, reply = await _post(base, path, build_text("x" * top))
            assert at in (200, 201), (field, reply)
            seen.append((field, top, over, at))
        for size, expected in ((page["maximum"] + 1, 400), (page["maximum"], 200)):
            async with (
                rest_session() as http,
                http.get(f"{base}/api/v1/messages?pageSize={size}") as resp,
            ):
                reply = await resp.json()
            assert resp.status == expected, reply
            if expected == 400:
                assert _fields(reply) == {"pageSize"}, reply
        seen.append(("pageSize", page["maximum"], 400, 200))
        key = idem["maxLength"]
        over, reply = await _post(
            base, "/api/v1/message/send", SEND, {"Idempotency-Key": "k" * (key + 1)}
        )
        assert over == 400 and _fields(reply) == {"Idempotency-Key"}, reply
        at, reply = await _post(base, "/api/v1/message/send", SEND, {"Idempotency-Key": "k" * key})
        assert at == 200, reply
        seen.append(("Idempotency-Key", key, over, at))
    print("\n(field, published maximum, status over it, status at it):", seen)


async def test_the_request_id_length_is_the_one_echoed(tmp_path: Any) -> None:
    spec = build_openapi(build_routes())
    # The longest id the answer's X-Request-Id header may echo.
    top = spec["components"]["headers"]["RequestId"]["schema"]["maxLength"]
    async with running_hub(f"sqlite+aiosqlite:///{tmp_path}/hub.db") as hub:
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/messages"
        echoed = []
        for size in (top, top + 1):
            async with (
                rest_session(headers={"x-request-id": "r" * size}) as http,
                http.get(url) as resp,
            ):
                echoed.append(resp.headers["X-Request-Id"] == "r" * size)
    # Longer ids are replaced rather than refused, as the parameter says.
    assert echoed == [True, False]
    # The parameter's own limit is the HTTP server's, not the echo's.
    assert spec["components"]["parameters"]["RequestId"]["schema"]["maxLength"] > top


# -- bodies ----------------------------------------------------------------------------------


def _body_routes(spec: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(method, path, required) of every proto operation that takes a JSON body."""
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody") if isinstance(op, dict) else None
            if path.startswith("/api/") and body is not None:
                found.append((method.upper(), path, bool(body.get("required"))))
    return found


async def test_a_body_the_document_requires_is_refused_when_left_out(db_url: str) -> None:
    spec = build_openapi(build_routes())
    routes = _body_routes(spec)
    # The public API's reference documents the webhook's body as required.
    assert ("POST", "/api/v1/config/webhook", True) in routes
    answers: dict[tuple[str, str], tuple[int, list[str]]] = {}
    async with inbound_hub(db_url) as hub, rest_session(headers={"x-verify-token": TOKEN}) as http:
        base = f"http://127.0.0.1:{hub.http_port}"
        for method, path, _required in routes:
            url = base + _PLACEHOLDER.sub("x", path)
            async with http.request(method, url) as resp:
                reply = await resp.json()
            answers[(method, path)] = (resp.status, [e["field"] for e in reply.get("errors", [])])
        json_null = {"data": b"null", "headers": {"Content-Type": "application/json"}}
        async with http.post(base + "/api/v1/config/webhook", **json_null) as resp:
            null_body = (resp.status, await resp.json())
    for method, path, required in routes:
        status, fields = answers[(method, path)]
        if required:
            assert (status, fields) == (400, ["body"]), (method, path, status, fields)
        else:
            assert "body" not in fields, (method, path, status, fields)
    assert any(not required for *_, required in routes)
    assert null_body[0] == 400 and _fields(null_body[1]) == {"body"}, null_body


# -- headers -------------------------------------------------------------------------------


async def test_credentials_no_key_could_match_are_401_and_other_headers_400(db_url: str) -> None:
    spec = build_openapi(build_routes())
    headers = spec["components"]["parameters"]
    url_path = "/api/v1/messages"
    cases = [
        # (extra headers, status, the header the refusal names)
        ({}, 200, ""),
        ({"Authorization": "Bearer a\tb"}, 401, "authorization"),
        ({"x-api-key": "k\tk"}, 401, "x-api-key"),
        # A key is not used in place of a credential the caller meant.
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, ""),
        ({"Idempotency-Key": "k\tk"}, 400, "idempotency-key"),
        ({"tracestate": "v=\t1"}, 400, "tracestate"),
        ({"traceparent": "00-a\tb"}, 400, "traceparent"),
    ]
    seen = []
    async with running_hub(db_url) as hub:
        for extra, status, named in cases:
            async with (
                rest_session(headers=extra) as http,
                http.get(f"http://127.0.0.1:{hub.http_port}{url_path}") as resp,
            ):
                reply = await resp.json()
            assert resp.status == status, (extra, reply)
            if named:
                assert _fields(reply) == {named}, (extra, reply)
            seen.append((list(extra), resp.status))
    # The headers the façade passes on are documented as printable ASCII.
    for name in ("IdempotencyKey", "Traceparent", "Tracestate"):
        pattern = headers[name]["schema"]["pattern"]
        assert re.search(pattern, "abc ~!") and not re.search(pattern, "a\tb"), name
    print("\n(headers, status):", seen)


def test_the_request_id_is_documented_as_taken_whatever_it_is_and_echoed_bounded() -> None:
    spec = build_openapi(build_routes())
    # Any text the HTTP server reads as a header value.
    assert spec["components"]["parameters"]["RequestId"]["schema"] == {
        "type": "string",
        "maxLength": MAX_HEADER_VALUE,
    }
    send = spec["paths"]["/api/v1/message/send"]["post"]["responses"]
    for code in ("200", "400", "401"):
        assert send[code]["headers"]["X-Request-Id"] == {"$ref": "#/components/headers/RequestId"}


async def test_what_the_document_allows_fits_what_the_http_server_reads(tmp_path: Any) -> None:
    spec = build_openapi(build_routes())
    dead = spec["paths"]["/api/v1/webhooks/dead-letters"]["get"]["parameters"]
    url = next(p["schema"] for p in dead if p.get("name") == "url")
    # The longest documented query, in characters that take 12 bytes encoded.
    query = "url=" + "%E2%82%AC" * url["maxLength"]
    bad_request = spec["paths"]["/api/v1/messages"]["get"]["responses"]["400"]["content"]
    async with running_hub(f"sqlite+aiosqlite:///{tmp_path}/hub.db") as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        async with (
            rest_session() as http,
            http.get(f"{base}/api/v1/webhooks/dead-letters?{query}") as resp,
        ):
            at_limit = resp.status
        headers = {"tracestate": "v" * (MAX_HEADER_VALUE + 1)}
        async with (
            rest_session(headers=headers) as http,
            http.get(f"{base}/api/v1/messages") as resp,
        ):
            over = (resp.status, resp.content_type)
    assert at_limit == 200
    # Past the HTTP server's limits a request is not valid HTTP: a plain-text 400.
    assert over == (400, "text/plain") and "text/plain" in bad_request


# -- what a field takes --------------------------------------------------------------------


def _property(spec: dict[str, Any], schema: str, name: str) -> dict[str, Any]:
    props: dict[str, Any] = spec["components"]["schemas"][schema]["properties"]
    return dict(props[name])


def test_text_fields_publish_the_nul_rule_numbers_and_null() -> None:
    spec = build_openapi(build_routes())
    body = _property(spec, "cim.v1.OutboundText", "body")
    # Optional text takes numbers (as their text) and null (as not given); no NUL.
    assert set(body["type"]) == {"string", "number", "null"}
    assert re.search(body["pattern"], "hi") and not re.search(body["pattern"], "h\x00i")
    # A pattern's digits could break: patterned text takes text only.
    provider = _property(spec, "cim.v1.Channel", "provider")
    assert provider["type"] == "string"
    channel_id = _property(spec, "cim.v1.SendMessageRequest", "channelId")
    assert channel_id["type"] == ["string", "number"] and channel_id["minLength"] == 1


def test_whole_numbers_publish_their_text_form_and_ranges() -> None:
    spec = build_openapi(build_routes())
    step = spec["components"]["schemas"]["cim.v1.FallbackStep"]
    deadline = step["properties"]["deadlineSeconds"]
    assert (deadline["minimum"], deadline["maximum"]) == (1, 86400)
    # 0 is what an unset proto3 number reads as, outside the range: it is needed.
    assert "deadlineSeconds" in step["required"]
    pattern = re.compile(deadline["pattern"])
    for text, taken in [("1", True), ("0086400", True), ("86401", False), ("0", False)]:
        assert bool(pattern.fullmatch(text)) is taken, text
    sends = [spec["components"]["schemas"][n] for n in ("cim.v1.SendMessageRequest",)]
    assert sends[0]["properties"]["fallback"]["maxItems"] == 4


def test_a_oneof_is_published_as_at_most_one_member() -> None:
    spec = build_openapi(build_routes())
    body = spec["components"]["schemas"]["cim.v1.MessageBody"]
    members = {"plain", "media", "location", "contact", "url", "button", "wrapUp"}
    branches = body["anyOf"]
    assert members <= {key for b in branches for key in b["properties"]}
    # In every branch all members but one are null or absent.
    assert all(len(b["properties"]) == len(branches) - 1 for b in branches)


async def test_declared_list_limits_and_patterns_are_enforced(db_url: str) -> None:
    spec = build_openapi(build_routes())
    keywords = spec["components"]["schemas"]["cim.v1.ConsentSettings"]["properties"]
    top = keywords["optOutKeywords"]["maxItems"]
    kind = next(
        p["schema"]
        for p in spec["paths"]["/api/v1/consents/{channel_type}/{address}"]["get"]["parameters"]
        if p.get("name") == "channel_type"
    )
    async with running_hub(db_url) as hub, rest_session() as http:
        base = f"http://127.0.0.1:{hub.http_port}"
        answers = []
        for count in (top + 1, top):
            words = [f"stop{i}" for i in range(count)]
            body = {"settings": {"optOutKeywords": words}}
            async with http.put(f"{base}/api/v1/consent-settings", json=body) as resp:
                answers.append((resp.status, _fields(await resp.json())))
        for value in ("S%20MS", "SMS"):
            async with http.get(f"{base}/api/v1/consents/{value}/%2B447911123456") as resp:
                answers.append((resp.status, _fields(await resp.json())))
    assert answers[0] == (400, {"settings.optOutKeywords"})
    assert answers[1][0] == 200
    assert answers[2] == (400, {"channelType"})
    # Nothing recorded for the address yet: not found, and not refused.
    assert answers[3] == (404, set())
    assert re.search(kind["pattern"], "SMS") and not re.search(kind["pattern"], "S MS")


@given(
    low=st.integers(-(10**7), 10**7),
    span=st.integers(0, 10**7),
    value=st.integers(-(2 * 10**7), 2 * 10**7),
    zeros=st.integers(0, 2),
)
def test_a_whole_number_pattern_matches_exactly_the_texts_in_range(
    low: int, span: int, value: int, zeros: int
) -> None:
    pattern = re.compile(int_text_pattern(low, low + span))
    text = ("-" if value < 0 else "") + "0" * zeros + str(abs(value))
    assert bool(pattern.fullmatch(text)) is (low <= value <= low + span)
    assert not pattern.fullmatch(f"{value}.0") and not pattern.fullmatch(f"+{abs(value)}")
