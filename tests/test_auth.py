"""Authentication over gRPC and REST: API keys, JWTs, revocation, open endpoints, the CLI."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from cim.v1 import outbound_pb2 as o
from server.api.tokens import sign
from server.app import Hub
from server.cli import main as cli_main
from server.config import Settings
from support.hub import TEST_API_ID, TEST_API_KEY, running_hub

JWT_APP = "app-jwt"
JWT_KEY = bytes(range(32)) + b"-jwt-signing-key"
JWT_SECRET = base64.b64encode(JWT_KEY).decode()
OTHER_KEY = b"k" * 48

Metadata = Sequence[tuple[str, str]]


def _key(api_id: str = TEST_API_ID, secret: str = TEST_API_KEY) -> list[tuple[str, str]]:
    return [("x-api-id", api_id), ("x-api-key", secret)]


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _token(**claims: Any) -> str:
    alg = claims.pop("alg", "HS256")
    key = claims.pop("key", JWT_KEY)
    body = {"iss": JWT_APP, "iat": int(time.time()), **claims}
    return sign({k: v for k, v in body.items() if v is not None}, key, alg)


async def _grpc_outcome(hub: Hub, metadata: Metadata) -> tuple[str, str, str]:
    """(code name, message, ErrorInfo reason) of a ListMessages call."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        try:
            await mg.MessagingServiceStub(channel).ListMessages(
                m.ListMessagesRequest(page_size=1), metadata=tuple(metadata)
            )
        except grpc.aio.AioRpcError as err:
            status = rpc_status.from_call(err)
            reason = ""
            for detail in status.details if status else ():
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason = info.reason
            return err.code().name, err.details() or "", reason
    return "OK", "", ""


async def _rest_outcome(hub: Hub, metadata: Metadata) -> tuple[int, str, str]:
    """(HTTP status, message, messageKey) of GET /api/v1/messages."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{hub.http_port}/api/v1/messages?pageSize=1", headers=dict(metadata)
        ) as resp,
    ):
        body = await resp.json()
        return resp.status, body.get("message", ""), body.get("messageKey", "")


async def test_auth_matrix_over_grpc_and_rest(db_url: str) -> None:
    async with running_hub(db_url, jwt_secrets=((JWT_APP, JWT_SECRET),)) as hub:
        revoked = await hub.store.keys.create_api_key("default", "app-revoked")
        assert await hub.revoke_key(revoked.api_id)
        now = int(time.time())
        cases: list[tuple[str, Metadata, bool]] = [
            ("no credentials", [], False),
            ("wrong key", _key(secret="not-the-secret"), False),
            ("unknown key id", _key(api_id="ak_unknown"), False),
            ("revoked key", _key(revoked.api_id, revoked.secret), False),
            ("key without id", [("x-api-key", TEST_API_KEY)], False),
            ("valid key", _key(), True),
            ("jwt valid", _bearer(_token()), True),
            ("jwt alg=none", _bearer(_token(alg="none")), False),
            ("jwt HS512", _bearer(_token(alg="HS512")), False),
            ("jwt wrong secret", _bearer(_token(key=OTHER_KEY)), False),
            ("jwt missing iat", _bearer(_token(iat=None)), False),
            ("jwt expired", _bearer(_token(iat=now - 200, exp=now - 100)), False),
            ("jwt too old", _bearer(_token(iat=now - 300 - 30 - 60)), False),
            ("jwt unknown issuer", _bearer(_token(iss="app-nobody")), False),
            ("jwt garbage", _bearer("not.a.jwt"), False),
            ("jwt valid + bad key", [*_bearer(_token()), *_key(secret="wrong")], True),
        ]
        accepted = refused = 0
        for name, metadata, ok in cases:
            code, _, reason = await _grpc_outcome(hub, metadata)
            status, _, key = await _rest_outcome(hub, metadata)
            if ok:
                assert (code, status) == ("OK", 200), name
                accepted += 1
            else:
                assert (code, status) == ("UNAUTHENTICATED", 401), name
                assert reason and reason == key, name
                refused += 1
        print(
            f"\nauth matrix: {len(cases)} cases x 2 transports;"
            f" {accepted} accepted, {refused} refused"
        )

        # Unknown, revoked and wrong keys cannot be told apart by their answers.
        answers = {
            await _grpc_outcome(hub, md)
            for md in (
                _key(secret="nope"),
                _key(api_id="ak_unknown"),
                _key(revoked.api_id, revoked.secret),
            )
        }
        rest_answers = {
            await _rest_outcome(hub, md)
            for md in (
                _key(secret="nope"),
                _key(api_id="ak_unknown"),
                _key(revoked.api_id, revoked.secret),
            )
        }
        assert len(answers) == 1 and len(rest_answers) == 1, (answers, rest_answers)


async def test_streams_need_credentials_and_health_does_not(db_url: str) -> None:
    async with running_hub(db_url) as hub:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stream = ng.NotificationServiceStub(channel).StreamNotifications(
                n.StreamNotificationsRequest()
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stream.read()
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = ng.NotificationServiceStub(channel).StreamNotifications(
                n.StreamNotificationsRequest(), metadata=tuple(_key())
            )
            first = await ok.read()
            assert first.WhichOneof("item") == "heartbeat"
            ok.cancel()
        base = f"http://127.0.0.1:{hub.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/api/v1/notifications/stream") as resp:
                assert resp.status == 401
                assert (await resp.json())["messageKey"] == "CREDENTIALS_MISSING"


class _Seconds:
    """A monotonic clock in seconds that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_revoked_elsewhere_stops_working_within_the_cache_lifetime(
    db_url: str,
) -> None:
    lifetime = 0.3
    seconds = _Seconds()
    async with running_hub(db_url, monotonic=seconds, key_cache_ttl_s=lifetime) as hub:
        key = await hub.store.keys.create_api_key("default", "app-2")
        credentials = _key(key.api_id, key.secret)
        assert (await _grpc_outcome(hub, credentials))[0] == "OK"  # now cached
        # As `cimhub keys revoke` in another process would: straight to the database.
        assert await hub.store.keys.revoke_api_key(key.api_id)
        seconds.now += lifetime - 0.01
        # Still within the lifetime: this server has not looked again.
        assert (await _grpc_outcome(hub, credentials))[0] == "OK"
        seconds.now += 0.02
        # Just past it: the key is read again, and refused.
        assert (await _grpc_outcome(hub, credentials))[0] == "UNAUTHENTICATED"


def test_jwt_settings_are_checked_at_configuration() -> None:
    short = base64.b64encode(b"x" * 31).decode()
    with pytest.raises(ValueError, match="at least 32"):
        Settings(jwt_secrets=(("app", short),))
    with pytest.raises(ValueError, match="base64"):
        Settings(jwt_secrets=(("app", "***"),))
    with pytest.raises(ValueError, match="leeway"):
        Settings(jwt_leeway_s=61)
    Settings(jwt_secrets=(("app", JWT_SECRET),), jwt_leeway_s=60)
    env = Settings.from_env({"CIMHUB_JWT_SECRETS": f'{{"{JWT_APP}": "{JWT_SECRET}"}}'})
    assert env.jwt_secrets == ((JWT_APP, JWT_SECRET),)
    assert JWT_SECRET not in repr(env)


def test_admin_cli_manages_tenants_and_keys(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", db_url]
    assert cli_main(["tenants", "create", "acme", *db]) == 0
    assert cli_main(["tenants", "create", "acme", *db]) == 1
    assert cli_main(["keys", "create", "--tenant", "acme", "--app", "acme-app", *db]) == 0
    out = capsys.readouterr().out
    api_id = out.split("x-api-id:", 1)[1].split()[0]
    secret = out.split("x-api-key:", 1)[1].split()[0]
    assert len(base64.urlsafe_b64decode(secret + "==")) >= 16  # at least 128 random bits
    assert cli_main(["keys", "list", "--tenant", "acme", *db]) == 0
    listing = capsys.readouterr().out
    assert api_id in listing and secret not in listing and "active" in listing

    async def use_key() -> tuple[str, str]:
        # acme-app's JWTs act for acme, the tenant that owns the app.
        async with running_hub(db_url, jwt_secrets=(("acme-app", JWT_SECRET),)) as hub:
            token = _token(iss="acme-app")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
                stub = mg.MessagingServiceStub(channel)
                sent = await stub.SendMessage(
                    m.SendMessageRequest(
                        channel_id="sandbox",
                        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
                        to=o.OutboundContact(phone="+447700900123"),
                        text=o.OutboundText(body="from acme"),
                    ),
                    metadata=tuple(_bearer(token)),
                )
                for md, visible in ((_key(api_id, secret), True), (_key(), False)):
                    try:
                        await stub.GetMessage(
                            m.GetMessageRequest(message_id=sent.message_id), metadata=tuple(md)
                        )
                        assert visible
                    except grpc.aio.AioRpcError as err:
                        assert not visible and err.code() == grpc.StatusCode.NOT_FOUND
            return (await _grpc_outcome(hub, _key(api_id, secret)))[0]

    async def key_outcome() -> str:
        async with running_hub(db_url) as hub:
            return (await _grpc_outcome(hub, _key(api_id, secret)))[0]

    assert cli_main(["keys", "create", "--tenant", "nobody", *db]) == 1
    assert asyncio.run(use_key()) == "OK"
    capsys.readouterr()
    # The CLI's own revoke, with no hub running: the next hub refuses the key.
    assert cli_main(["keys", "revoke", api_id, *db]) == 0
    assert f"key {api_id} revoked" in capsys.readouterr().out
    assert asyncio.run(key_outcome()) == "UNAUTHENTICATED"
    assert cli_main(["keys", "revoke", "ak_missing", *db]) == 1
    assert cli_main(["keys", "list", "--tenant", "acme", *db]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split("\t")[-1] for r in rows if r.startswith(f"{api_id}\t")] == ["revoked"]


async def test_an_empty_database_gets_one_printed_key_at_first_start(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_hub(db_url, bootstrap_api_id="", bootstrap_api_key="") as hub:
        printed = capsys.readouterr().out
        api_id = printed.split("x-api-id:", 1)[1].split()[0]
        secret = printed.split("x-api-key:", 1)[1].split()[0]
        assert (await _grpc_outcome(hub, _key(api_id, secret)))[0] == "OK"
    async with running_hub(db_url, bootstrap_api_id="", bootstrap_api_key="") as hub:
        assert "x-api-key" not in capsys.readouterr().out
        assert (await _grpc_outcome(hub, _key(api_id, secret)))[0] == "OK"
    # A configured bootstrap key joins the same tenant, and starting twice changes nothing.
    for _ in range(2):
        async with running_hub(db_url) as hub:
            assert (await _grpc_outcome(hub, _key()))[0] == "OK"
            assert (await _grpc_outcome(hub, _key(api_id, secret)))[0] == "OK"


async def test_a_revoked_bootstrap_key_stays_revoked_across_a_restart(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_hub(db_url) as hub:
        assert (await _grpc_outcome(hub, _key()))[0] == "OK"
    db = ["--database-url", db_url]
    assert await asyncio.to_thread(cli_main, ["keys", "revoke", TEST_API_ID, *db]) == 0
    # Started again with the same CIMHUB_BOOTSTRAP_API_ID/KEY settings.
    with caplog.at_level("WARNING", logger="server.api.bootstrap"):
        async with running_hub(db_url) as hub:
            assert (await _grpc_outcome(hub, _key()))[0] == "UNAUTHENTICATED"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"bootstrap key {TEST_API_ID} is revoked" in w for w in warnings)
