"""/openapi.json: a valid OpenAPI 3.1 document that lists exactly the routes served."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from adapters.registry import PROVIDERS
from server.gateway.openapi import build_openapi
from server.gateway.routes import build_routes
from support.hub import running_hub

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
