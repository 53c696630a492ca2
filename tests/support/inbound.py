"""Helpers for the inbound, session and activity tests: payloads, REST calls, row counts,
and a live gRPC subscriber."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import func, select

from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from server.api.context import DEFAULT_TENANT
from server.app import Hub
from server.domain.events import EventType, StoredEvent
from server.storage import (
    conversation_schema,
    customer_schema,
    message_schema,
    webhook_schema,
)
from support.hub import authed_channel, rest_session, running_hub

TOKEN = "test-verify-token"
SEEDS = Path(__file__).resolve().parent.parent / "seeds"
PHONE = "+447700900123"

# Every table the inbound, session and activity paths write to.
WRITTEN_TABLES = (
    customer_schema.contacts,
    conversation_schema.inbound_messages,
    conversation_schema.sessions,
    conversation_schema.conversation_states,
    conversation_schema.activities,
    conversation_schema.conversations,
    conversation_schema.events,
    message_schema.messages,
    message_schema.status_history,
    webhook_schema.webhooks,
)


def seed(name: str) -> Any:
    return json.loads((SEEDS / name).read_text())


def contact(
    contact_id: str = "c1", channel_id: str = "sandbox", phone: str = PHONE, **extra: Any
) -> dict[str, Any]:
    return {
        "contactId": contact_id,
        "channelId": channel_id,
        "profile": {"name": "Ana Lima", "phone": phone},
        **extra,
    }


def text_message(
    ext_id: str, body: str = "hello", sender: str = PHONE, contact_id: str = "c1"
) -> dict[str, Any]:
    return {
        "id": ext_id,
        "from": sender,
        "contactId": contact_id,
        "type": "text",
        "text": {"body": body},
    }


def wrapper(
    *messages: dict[str, Any],
    contacts: Iterable[dict[str, Any]] | None = None,
    statuses: Iterable[dict[str, Any]] = (),
    events: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "contacts": list(contacts) if contacts is not None else [contact()],
        "messages": list(messages),
        "statuses": list(statuses),
        "events": list(events),
    }


async def call(
    hub: Hub,
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    token: str | None = TOKEN,
) -> tuple[int, dict[str, Any]]:
    headers = {"x-verify-token": token} if token is not None else {}
    async with (
        rest_session() as http,
        http.request(
            method,
            f"http://127.0.0.1:{hub.http_port}{path}",
            json=body,
            headers=headers,
        ) as resp,
    ):
        return resp.status, await resp.json()


async def receive(hub: Hub, payload: dict[str, Any]) -> dict[str, Any]:
    """POST a webhook payload that must be accepted; returns the reply's data."""
    status, body = await call(hub, "/api/v1/message/receive", payload)
    assert status == 200, body
    return body["data"]


async def row_counts(hub: Hub) -> dict[str, int]:
    async with hub.store.engine.connect() as conn:
        return {
            t.name: (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in WRITTEN_TABLES
        }


async def logged(hub: Hub, *types: EventType) -> list[StoredEvent]:
    events = await hub.store.events.events_after(DEFAULT_TENANT, 0, 10_000)
    return [e for e in events if not types or e.event.type in types]


def field_paths(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


@dataclass
class LiveChanges:
    """What a live gRPC subscriber (an empty StreamNotificationsRequest) has seen."""

    items: list[tuple[str, n.Change]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, notification_type: str, change: n.Change) -> None:
        self.items.append((notification_type, change))
        self._arrived.set()

    def of_type(self, event_type: str) -> list[n.Change]:
        return [c for _, c in self.items if c.event.type == event_type]

    async def wait_for(self, check: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not check():
                self._arrived.clear()
                await self._arrived.wait()


@asynccontextmanager
async def live_changes(hub: Hub) -> AsyncIterator[LiveChanges]:
    before = hub.bus.subscriber_count
    channel = authed_channel(f"127.0.0.1:{hub.grpc_port}")
    stream = ng.NotificationServiceStub(channel).StreamNotifications(n.StreamNotificationsRequest())
    seen = LiveChanges()

    async def pump() -> None:
        async for item in stream:
            if item.WhichOneof("item") == "notification":
                for change in item.notification.body.changes:
                    seen.add(item.notification.type, change)

    task = asyncio.create_task(pump())
    try:
        # Only once the server holds the subscription is nothing missed.
        async with asyncio.timeout(10):
            while hub.bus.subscriber_count <= before:  # noqa: ASYNC110 - server-side state
                await asyncio.sleep(0.01)
        yield seen
    finally:
        stream.cancel()
        task.cancel()
        with suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task
        await channel.close()


def inbound_hub(db_url: str, **overrides: Any) -> Any:
    """A running hub whose webhooks accept TOKEN."""
    return running_hub(db_url, **{"verify_token": TOKEN, **overrides})
