"""A channel a tenant creates is the tenant's: it cannot read the server's secrets,
reach internal hosts or name server files.

Two tenants try every attack over REST and gRPC, creating and updating. Each is
400 naming the field; a loopback listener that every attack points at sees no
connection, and no secret value ever reaches it or comes back in an answer.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cim.v1 import config_service_pb2 as cfg
from cim.v1 import config_service_pb2_grpc as cfg_grpc
from fakes.twilio import FakeTwilio
from support.clock import eventually
from support.hub import AUTH_METADATA, channel_to, rest_session, running_hub
from support.listener import recording_listener

ACCOUNT_SID = "AC" + "3" * 32
SERVER_SECRET = "server-env-secret-4b71"  # held by the server, never a tenant's
TENANT_TOKEN = "tenant-token-c0ffee"
SET_VAR, UNSET_VAR = "CIMHUB_OWNERSHIP_SET_SECRET", "CIMHUB_OWNERSHIP_UNSET_SECRET"


def twilio(**settings: Any) -> dict[str, Any]:
    return {"provider": "twilio", "contactType": "SMS", "lane": "+15005550006",
            "settings": {"account_sid": ACCOUNT_SID, **settings}}  # fmt: skip


def email(host: str, port: int) -> dict[str, Any]:
    settings = {"host": host, "port": port, "security": "none"}
    return {"provider": "smtp", "contactType": "EMAIL", "lane": "news@brand.example.org",
            "settings": settings}  # fmt: skip


def whatsapp(base_url: str) -> dict[str, Any]:
    settings = {"phone_number_id": "1", "access_token": TENANT_TOKEN, "app_secret": "a",
                "verify_token": "v", "base_url": base_url}  # fmt: skip
    return {"provider": "whatsapp", "contactType": "WHATSAPP", "settings": settings}


def attacks(port: int) -> list[tuple[str, dict[str, Any], str]]:
    """(name, channel without its id, the field the refusal must name)."""
    token = {"auth_token": TENANT_TOKEN}
    at = f"127.0.0.1:{port}"
    sent_log = {"provider": "sandbox", "contactType": "SMS",
                "settings": {"sent_log": "/tmp/cimhub-tenant-sent.log"}}  # fmt: skip
    return [
        ("env var that exists", twilio(auth_token_env=SET_VAR), "settings.auth_token_env"),
        ("env var that does not", twilio(auth_token_env=UNSET_VAR), "settings.auth_token_env"),
        ("loopback", twilio(**token, base_url=f"http://{at}"), "settings.base_url"),
        ("loopback v6", twilio(**token, base_url=f"http://[::1]:{port}"), "settings.base_url"),
        (
            "mapped",
            twilio(**token, base_url=f"http://[::ffff:127.0.0.1]:{port}"),
            "settings.base_url",
        ),
        ("decimal", twilio(**token, base_url=f"http://2130706433:{port}"), "settings.base_url"),
        ("localhost", twilio(**token, base_url=f"http://localhost:{port}"), "settings.base_url"),
        ("metadata", twilio(**token, base_url="http://169.254.169.254/"), "settings.base_url"),
        ("private", twilio(**token, base_url="http://10.0.0.1/"), "settings.base_url"),
        ("whatsapp loopback", whatsapp(f"http://{at}"), "settings.base_url"),
        ("smtp loopback", email("127.0.0.1", port), "settings.host"),
        ("smtp localhost", email("localhost", port), "settings.host"),
        ("smtp private", email("192.168.1.20", port), "settings.host"),
        ("sent_log", sent_log, "settings.sent_log"),
    ]


def grpc_channel(body: dict[str, Any]) -> cfg.Channel:
    channel = cfg.Channel(
        channel_id=body["channelId"],
        contact_type=body["contactType"],
        provider=body["provider"],
        lane=body.get("lane", ""),
    )
    channel.settings.update(body["settings"])
    return channel


def violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None
    found: list[tuple[str, str]] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.extend((v.field, v.description) for v in bad.field_violations)
    return found


Refusal = list[tuple[str, str]]


async def rest_refusal(
    http: aiohttp.ClientSession, method: str, url: str, body: Any, answers: list[str]
) -> Refusal:
    async with http.request(method, url, json=body) as resp:
        text = await resp.text()
        answers.append(text)
        assert resp.status == 400, (method, text)
        return [(e["field"], e["description"]) for e in json.loads(text)["errors"]]


async def grpc_refusal(call: Any, request: Any, metadata: Any, answers: list[str]) -> Refusal:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request, metadata=metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    answers.append(f"{err.value.details()} {err.value.trailing_metadata()}")
    return violations(err.value)


async def refusals_for(
    hub: Any, grpc_ch: grpc.aio.Channel, tenant: str, headers: dict[str, str], port: int,
    answers: list[str],
) -> dict[tuple[str, str], Refusal]:  # fmt: skip
    """Every attack as tenant, created and updated over REST and gRPC."""
    base = f"http://127.0.0.1:{hub.http_port}/api/v1/config/channels"
    stub = cfg_grpc.ConfigServiceStub(grpc_ch)
    metadata = tuple(headers.items())
    owned = f"ok-{tenant}"  # updates are tried on a channel the tenant owns
    found: dict[tuple[str, str], Refusal] = {}
    async with rest_session(headers=headers) as http:
        clean = {"channelId": owned, **twilio(auth_token=TENANT_TOKEN)}
        async with http.post(base, json=clean) as resp:
            answers.append(await resp.text())
            assert resp.status == 201, answers[-1]
        for name, body, _ in attacks(port):
            create = {"channelId": f"x-{tenant}", **body}
            found[("rest create", name)] = await rest_refusal(http, "POST", base, create, answers)
            update = {**body, "channelId": owned}
            found[("rest update", name)] = await rest_refusal(
                http, "PUT", f"{base}/{owned}", update, answers
            )
            found[("grpc create", name)] = await grpc_refusal(
                stub.CreateChannel,
                cfg.CreateChannelRequest(
                    channel=grpc_channel({"channelId": f"g-{tenant}", **body})
                ),
                metadata,
                answers,
            )
            found[("grpc update", name)] = await grpc_refusal(
                stub.UpdateChannel,
                cfg.UpdateChannelRequest(channel=grpc_channel(update)),
                metadata,
                answers,
            )
        async with http.get(base) as resp:
            listed = await resp.json()
            answers.append(str(listed))
    # Nothing refused was kept, and the owned channel is as it was created.
    ids = {c["channelId"] for c in listed["results"]}
    assert f"x-{tenant}" not in ids and f"g-{tenant}" not in ids
    [kept] = [c for c in listed["results"] if c["channelId"] == owned]
    assert kept["settings"] == {"account_sid": ACCOUNT_SID, "auth_token": "***"}
    return found


@pytest.fixture
def server_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set before the hub starts, so the adapters' environment holds it.
    monkeypatch.setenv(SET_VAR, SERVER_SECRET)
    monkeypatch.delenv(UNSET_VAR, raising=False)


@pytest.mark.usefixtures("server_secret")
async def test_every_attack_is_refused_by_field_for_both_tenants_over_rest_and_grpc(
    db_url: str,
) -> None:
    answers: list[str] = []  # every body and status detail, to search for secrets
    refused: dict[tuple[str, str, str], Refusal] = {}
    async with (
        recording_listener() as listener,
        running_hub(db_url, outbound_allow=()) as hub,
        channel_to(hub) as grpc_ch,
    ):
        await hub.store.keys.create_tenant("tenant-b")
        b_key = await hub.store.keys.create_api_key("tenant-b")
        tenants = {
            "default": dict(AUTH_METADATA),
            "tenant-b": {"x-api-id": b_key.api_id, "x-api-key": b_key.secret},
        }
        for tenant, headers in tenants.items():
            found = await refusals_for(hub, grpc_ch, tenant, headers, listener.port, answers)
            refused.update({(tenant, *key): value for key, value in found.items()})
    print(f"\n{len(refused)} refusals; listener connections: {listener.connections}")
    for (tenant, call, name), why in sorted(refused.items()):
        if tenant == "tenant-b" and call == "grpc update":
            print(f"  {name}: {why}")
    expected = {name: field for name, _, field in attacks(listener.port)}
    for (tenant, call, name), why in refused.items():
        assert [f for f, _ in why] == [expected[name]], (tenant, call, name, why)
        if expected[name] in ("settings.base_url", "settings.host"):
            assert why[0][1].startswith("refused"), (tenant, call, name, why)
    # Whether the variable exists is not told, in any call, to any tenant.
    for tenant in tenants:
        for call in ("rest create", "rest update", "grpc create", "grpc update"):
            assert (
                refused[(tenant, call, "env var that exists")]
                == refused[(tenant, call, "env var that does not")]
            )
    assert len(refused) == 2 * 4 * len(expected)
    assert listener.connections == 0
    assert listener.received == []
    for secret in (SERVER_SECRET, TENANT_TOKEN, SET_VAR):
        assert not listener.saw(secret)
        assert not any(secret in answer for answer in answers), secret


@pytest.mark.usefixtures("server_secret")
async def test_a_tenant_channel_sends_with_the_credential_it_carries(db_url: str) -> None:
    """Loopback allowed by outbound_allow, as in development: the tenant's Twilio
    channel reaches the fake with the tenant's own token."""
    async with FakeTwilio(account_sid=ACCOUNT_SID, auth_token=TENANT_TOKEN) as fake:
        async with running_hub(db_url) as hub, rest_session() as http:
            base = f"http://127.0.0.1:{hub.http_port}/api/v1"
            channel = {"channelId": "tw-own", **twilio(auth_token=TENANT_TOKEN, base_url=fake.url)}
            async with http.post(f"{base}/config/channels", json=channel) as resp:
                assert resp.status == 201, await resp.text()
            send = {
                "channelId": "tw-own",
                "type": "text",
                "to": {"phone": "+447911100077"},
                "text": {"body": "hi"},
            }
            async with http.post(f"{base}/message/send", json=send) as resp:
                assert resp.status == 200, await resp.text()
            await eventually(lambda: len(fake.messages) == 1)
        [request] = fake.requests
        basic = base64.b64decode(request.headers["Authorization"].split(" ", 1)[1]).decode()
    print(f"\nfake Twilio received {len(fake.requests)} request(s) as {ACCOUNT_SID}")
    assert basic == f"{ACCOUNT_SID}:{TENANT_TOKEN}"
    assert not any(SERVER_SECRET in str(r.headers) + str(r.form) for r in fake.requests)
