"""Secrets stay secret: not in the database, the logs, errors or API responses."""

from __future__ import annotations

import base64
import logging
import sqlite3
import time
from typing import Any

import aiohttp
import grpc
import pytest
from sqlalchemy import select

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from server.api.tokens import sign
from server.config import DEFAULT_CHANNELS, Settings
from server.domain.models import Channel
from server.storage.schema import metadata
from support.hub import TEST_API_ID, TEST_API_KEY, running_hub

JWT_APP = "app-secrets"
JWT_KEY = b"jwt-key-that-must-never-be-logged-0123456789"
JWT_SECRET = base64.b64encode(JWT_KEY).decode()
PROVIDER_TOKEN = "provider-credential-7f3a9c"
GUESSED = "guessed-secret-never-to-be-echoed"


async def _dump(db_url: str, engine: Any) -> str:
    """Every row of every table, as text."""
    if db_url.startswith("sqlite"):
        path = db_url.split(":///", 1)[1]
        with sqlite3.connect(path) as conn:
            return "\n".join(conn.iterdump())
    lines: list[str] = []
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in await conn.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


async def test_the_database_holds_no_plaintext_key_secret(db_url: str) -> None:
    async with running_hub(db_url) as hub:
        made = await hub.store.keys.create_api_key("default", "app-dump")
        dump = await _dump(db_url, hub.store.engine)
    secrets = {TEST_API_KEY: "bootstrap", made.secret: "created"}
    assert TEST_API_ID in dump and made.api_id in dump  # the dump did see the key rows
    found = [name for secret, name in secrets.items() if secret in dump]
    print(f"\ndump of {len(dump)} characters; plaintext secrets found: {found}")
    assert found == []


async def test_secrets_never_reach_logs_errors_or_responses(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    channel = Channel(
        "sandbox-secret",
        "SANDBOX",
        "sandbox",
        sandbox=True,
        settings={"auth_token": PROVIDER_TOKEN},
    )
    seen: list[str] = []
    async with running_hub(
        db_url,
        jwt_secrets=((JWT_APP, JWT_SECRET),),
        channels=(*DEFAULT_CHANNELS, channel),
    ) as hub:
        made = await hub.store.keys.create_api_key("default", "app-logs")
        now = int(time.time())
        good_jwt = sign({"iss": JWT_APP, "iat": now}, JWT_KEY)
        bad_jwt = sign({"iss": JWT_APP, "iat": now}, b"x" * 40)
        attempts: list[list[tuple[str, str]]] = [
            [("x-api-id", TEST_API_ID), ("x-api-key", TEST_API_KEY)],
            [("x-api-id", made.api_id), ("x-api-key", made.secret)],
            [("x-api-id", TEST_API_ID), ("x-api-key", GUESSED)],
            [("x-api-id", "ak_unknown"), ("x-api-key", GUESSED)],
            [("authorization", f"Bearer {good_jwt}")],
            [("authorization", f"Bearer {bad_jwt}")],
        ]
        base = f"http://127.0.0.1:{hub.http_port}"
        paths = (
            "/api/v1/messages",
            "/api/v1/config/channels",
            "/api/v1/config/channels/sandbox-secret",
        )
        channel_bodies: list[str] = []

        async def ask(md: list[tuple[str, str]]) -> tuple[grpc.StatusCode, list[int]]:
            """The gRPC code and the REST statuses these credentials get."""
            async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as ch:
                try:
                    reply = await mg.MessagingServiceStub(ch).ListMessages(
                        m.ListMessagesRequest(), metadata=tuple(md)
                    )
                    seen.append(str(reply))
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as err:
                    seen.append(f"{err.code()} {err.details()} {err.trailing_metadata()}")
                    code = err.code()
            statuses = []
            async with aiohttp.ClientSession() as http:
                for path in paths:
                    async with http.get(base + path, headers=dict(md)) as resp:
                        body = await resp.text()
                        seen.append(f"{resp.status} {dict(resp.headers)} {body}")
                        statuses.append(resp.status)
                        if path.endswith("sandbox-secret") and resp.status == 200:
                            channel_bodies.append(body)
            return code, statuses

        # The two keys and the token that are valid; the rest must be refused.
        valid = [True, True, False, False, True, False]
        outcomes = [await ask(md) for md in attempts]
        await hub.revoke_key(made.api_id)
        attempts.append([("x-api-id", made.api_id), ("x-api-key", made.secret)])
        valid.append(False)
        outcomes.append(await ask(attempts[-1]))
    # The checks below only mean something if the valid credentials got real
    # answers, among them the channel that holds the provider credential.
    ok, refused = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED
    assert outcomes == [(ok, [200] * 3) if v else (refused, [401] * 3) for v in valid]
    assert len(channel_bodies) == valid.count(True)
    assert all("sandbox-secret" in body for body in channel_bodies)
    seen.append(
        repr(
            Settings(
                jwt_secrets=((JWT_APP, JWT_SECRET),),
                bootstrap_api_id="a",
                bootstrap_api_key=TEST_API_KEY,
            )
        )
    )
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    secrets = {
        "bootstrap key": TEST_API_KEY,
        "created key": made.secret,
        "guessed key": GUESSED,
        "jwt secret": JWT_SECRET,
        "jwt key": JWT_KEY.decode(),
        "jwt": good_jwt,
        "bad jwt": bad_jwt,
        "provider credential": PROVIDER_TOKEN,
    }
    leaks = [
        (name, where)
        for name, secret in secrets.items()
        for where, text in (("logs", logs), ("responses", "\n".join(seen)))
        if secret in text
    ]
    print(
        f"\n{len(caplog.records)} log records and {len(seen)} responses checked"
        f" for {len(secrets)} secrets; leaks: {leaks}"
    )
    assert leaks == []
