"""Roles: an "api" process accepts and never sends; a "dispatcher" process sends what it accepted.

Both processes share one database, as separate `cimhub serve --role ...`
processes would (here, two hubs in one test process, each with its own engine
and group-commit writer).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from server.config import Settings
from support.hub import rest_session, running_hub
from support.replicas import wait_until

V1 = "/api/v1/message/send"
# Several of the dispatcher's poll intervals: long enough to see that nothing moves.
QUIET_S = 1.5


async def _send(http: Any, port: int, n: int) -> str:
    body = {
        "channelId": "sandbox",
        "type": "text",
        "to": {"phone": f"+4479112{n:05d}"},
        "text": {"body": f"role {n}"},
    }
    async with http.post(f"http://127.0.0.1:{port}{V1}", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["data"]["messageId"])


async def _status(hub: Any, message_id: str) -> str:
    message = await hub.store.messages.get_message("default", message_id)
    return str(message.status.name)


async def test_an_api_process_accepts_and_a_dispatcher_process_sends(db_url: str) -> None:
    async with (
        running_hub(db_url, role="api", dispatch_poll_interval=0.05) as api,
        rest_session() as http,
    ):
        first = await _send(http, api.http_port, 1)
        # Alone, the api process never sends: the message waits, accepted.
        await asyncio.sleep(QUIET_S)
        assert await _status(api, first) == "ACCEPTED"

        async with running_hub(db_url, role="dispatcher", dispatch_poll_interval=0.05):

            async def delivered(message_id: str) -> bool:
                return await _status(api, message_id) == "DELIVERED"

            await wait_until(lambda: delivered(first), 20, interval=0.05)
            # Sent while both run: the dispatcher finds it without being woken.
            second = await _send(http, api.http_port, 2)
            await wait_until(lambda: delivered(second), 20, interval=0.05)

        third = await _send(http, api.http_port, 3)
        await asyncio.sleep(QUIET_S)
        assert await _status(api, third) == "ACCEPTED"


async def test_a_dispatcher_process_still_serves_calls_and_health(db_url: str) -> None:
    async with running_hub(db_url, role="dispatcher") as hub, rest_session() as http:
        async with http.get(f"http://127.0.0.1:{hub.http_port}/healthz") as resp:
            assert resp.status == 200
        sent = await _send(http, hub.http_port, 4)

        async def delivered() -> bool:
            return await _status(hub, sent) == "DELIVERED"

        await wait_until(delivered, 20, interval=0.05)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="role must be one of all, api, dispatcher"):
        Settings(role="sender")
    assert Settings.from_env({"CIMHUB_ROLE": "API"}).role == "api"


def test_serve_offers_the_roles() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--role {all,api,dispatcher}" in out
    refused = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--role", "sender"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "invalid choice: 'sender'" in refused.stderr
