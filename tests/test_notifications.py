"""Live notifications: gap-free resume, SSE and WebSocket, back-pressure, fan-out, webhooks."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import statistics
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cim.v1 import notification_service_pb2 as n
from cim.v1 import notification_service_pb2_grpc as ng
from server.api.context import DEFAULT_TENANT
from server.api.convert import notifications as proto_notifications
from server.domain.envelope import envelope
from server.domain.events import EventType, NewEvent
from server.domain.webhook_signing import verify
from server.gateway.jsonmap import to_json
from support.clock import FakeClock, eventually
from support.hub import authed_channel, channel_to, rest_session, running_hub
from support.net import serving

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS = [f"c0000000-0000-0000-0000-{i:012d}" for i in range(25)]


async def emit(
    hub: Any, count: int, *, start: int = 0, chunk: int = 100, pause: float = 0.0, padding: int = 0
) -> None:
    """Publish `count` content events spread over the test conversations, through the real log."""
    for first in range(start, start + count, chunk):
        batch = [
            NewEvent(
                conversation_id=CONVERSATIONS[i % len(CONVERSATIONS)],
                type=EventType.CONTENT,
                originator_id="customer-1",
                originator_role="CONSUMER",
                message=f"m{i}" + " " * padding,
                content_type="text/plain",
                message_id=f"msg-{i}",
            )
            for i in range(first, min(first + chunk, start + count))
        ]
        await hub.store.events.append_events(DEFAULT_TENANT, batch)
        if pause:
            await asyncio.sleep(pause)


def assert_complete(seen: list[tuple[str, int, str]], total: int) -> None:
    assert len(seen) == total, f"{len(seen)} events, expected {total}"
    assert len(set(seen)) == total, "duplicates"
    by_conversation: dict[str, list[int]] = defaultdict(list)
    for conversation, sequence, _ in seen:
        by_conversation[conversation].append(sequence)
    for sequences in by_conversation.values():
        assert sequences == list(range(1, len(sequences) + 1)), (
            "gap or disorder within a conversation"
        )


async def test_subscribers_that_disconnect_at_random_resume_without_gap_or_duplicate(
    db_url: str,
) -> None:
    total = 5000
    rng = random.Random(20261122)
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = ng.NotificationServiceStub(channel)

        async def subscriber() -> tuple[list[tuple[str, int, str]], int]:
            seen: list[tuple[str, int, str]] = []
            cursor, reconnects = "c0", 0
            while len(seen) < total:
                budget = rng.randint(1, 700)  # read this many changes, then drop the connection
                call = stub.StreamNotifications(n.StreamNotificationsRequest(after=cursor))
                try:
                    async for item in call:
                        if item.WhichOneof("item") != "notification":
                            continue
                        changes = item.notification.body.changes
                        seen.extend(
                            (c.conversation_id, c.sequence, c.event.message) for c in changes
                        )
                        cursor = item.cursor
                        budget -= len(changes)
                        if budget <= 0 or len(seen) >= total:
                            break
                finally:
                    call.cancel()
                reconnects += 1
            return seen, reconnects

        async with asyncio.timeout(120):
            readers = [asyncio.create_task(subscriber()) for _ in range(3)]
            await emit(hub, total, chunk=50, pause=0.002)
            results = await asyncio.gather(*readers)
    for seen, reconnects in results:
        print(f"\nsubscriber: {len(seen)} events over {reconnects} connections")
        assert reconnects > 3
        assert_complete(seen, total)


async def _read_sse(resp: aiohttp.ClientResponse, want: int) -> list[tuple[str, dict[str, Any]]]:
    """(id, envelope) for the next `want` notification events."""
    events: list[tuple[str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(20):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if fields.get("event") == "notification":
                events.append((fields["id"], json.loads(fields["data"])))
                if sum(len(e["body"]["changes"]) for _, e in events) >= want:
                    return events
            fields = {}
    return events


def _changes(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, int, str]]:
    return [
        (c["conversationId"], c["sequence"], c["event"]["message"])
        for _, env in events
        for c in env["body"]["changes"]
    ]


async def test_sse_resumes_from_last_event_id_and_carries_the_envelope(db_url: str) -> None:
    async with running_hub(db_url) as hub, rest_session() as http:
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/notifications/stream"
        await emit(hub, 30, chunk=10)
        async with http.get(url, params={"after": "c0"}) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            first = await _read_sse(resp, 12)
        last_id = first[-1][0]
        await emit(hub, 20, start=30, chunk=10)
        async with http.get(url, headers={"Last-Event-ID": last_id}) as resp:
            rest = await _read_sse(resp, 50 - len(_changes(first)))
        async with http.get(url, params={"after": "bogus"}) as refused:
            refused_body = await refused.json()
    assert_complete(_changes(first) + _changes(rest), 50)
    env = first[0][1]
    assert set(env) == {"kind", "type", "body"}
    assert (env["kind"], env["type"]) == ("notification", "ms.MessagingEventNotification")
    change = env["body"]["changes"][0]
    assert set(change) == {
        "sequence",
        "originatorId",
        "originatorMetadata",
        "serverTimestamp",
        "event",
        "conversationId",
        "dialogId",
        "messageAudience",
    }
    assert isinstance(change["sequence"], int) and isinstance(change["serverTimestamp"], int)
    assert change["originatorMetadata"] == {"id": "customer-1", "role": "CONSUMER"}
    assert {k: change["event"][k] for k in ("type", "message", "contentType")} == {
        "type": "ContentEvent",
        "message": "m0",
        "contentType": "text/plain",
    }
    assert change["messageAudience"] == "ALL" and change["dialogId"] == change["conversationId"]
    assert refused.status == 400 and refused_body["errors"][0]["field"] == "after"


async def test_websocket_receives_the_same_events(db_url: str) -> None:
    async with running_hub(db_url) as hub, rest_session() as http:
        await emit(hub, 40, chunk=10)
        url = f"http://127.0.0.1:{hub.http_port}/api/v1/notifications/stream?after=c0"
        seen: list[tuple[str, int, str]] = []
        ids: list[str] = []
        async with http.ws_connect(url) as ws:
            async with asyncio.timeout(20):
                async for msg in ws:
                    frame = json.loads(msg.data)
                    if frame["event"] == "notification":
                        ids.append(frame["id"])
                        seen.extend(
                            (c["conversationId"], c["sequence"], c["event"]["message"])
                            for c in frame["data"]["body"]["changes"]
                        )
                        if len(seen) >= 40:
                            break
        async with http.get(
            f"http://127.0.0.1:{hub.http_port}/api/v1/notifications/stream", params={"after": "c0"}
        ) as resp:
            via_sse = _changes(await _read_sse(resp, 40))
    assert_complete(seen, 40)
    assert seen == via_sse
    assert ids == sorted(ids, key=lambda c: int(c[1:]))


@pytest.mark.slow  # traces every allocation
async def test_a_subscriber_that_never_reads_is_cut_off_with_a_resumable_cursor(
    tmp_path: Path,
) -> None:
    total = 20_000
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    buffer, chunk, padding = 2_000, 1_000, 1_000
    async with running_hub(db_url, subscriber_buffer=buffer) as hub, channel_to(hub) as channel:
        stub = ng.NotificationServiceStub(channel)
        stalled = stub.StreamNotifications(n.StreamNotificationsRequest())
        await stalled.read()  # the opening heartbeat: subscribed, and now we stop reading
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            # About 1 KB per event, so the backlog outgrows what gRPC itself buffers.
            await emit(hub, total, chunk=chunk, padding=padding)
            await eventually(lambda: hub.bus.subscriber_count == 0, within=30)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        received: list[tuple[str, int, str]] = []
        cursor = ""
        try:
            while (item := await stalled.read()) is not grpc.aio.EOF:
                if item.WhichOneof("item") == "notification":
                    received.extend(
                        (c.conversation_id, c.sequence, c.event.message)
                        for c in item.notification.body.changes
                    )
                    cursor = item.cursor
            raise AssertionError("the stream should have ended with an error")
        except grpc.aio.AioRpcError as err:
            code = err.code()
            status = rpc_status.from_call(err)
        info = error_details_pb2.ErrorInfo()
        assert any(
            d.Unpack(info) for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)
        )
        # The status names the last item certainly handed over; an item whose
        # write was abandoned may still have arrived, so resume from the later.
        status_cursor = info.metadata["cursor"]
        resume_from = max(status_cursor, cursor or status_cursor, key=lambda c: int(c[1:]))
        print(
            f"\nPython memory at peak={peak / 1e6:.1f} MB for a {total * padding / 1e6:.0f} MB"
            f" backlog; cut off after {len(received)}"
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.reason == "SUBSCRIBER_TOO_SLOW"
        assert int(status_cursor[1:]) <= int((cursor or status_cursor)[1:])
        # The design bounds what a subscriber holds by its buffer, whatever the
        # backlog: at most `buffer` events, plus the chunk being written. Each
        # event is its padding and about 1 kB of objects; twice that for margin,
        # which also covers the shared conversion cache (`buffer` entries of a
        # few hundred bytes of Python objects each: the text sits in the proto).
        # (Traced memory is Python's own; gRPC's C-level buffers are not in it.)
        allowed = (buffer + chunk) * (padding + 1024) * 2
        assert peak < allowed, f"{peak} bytes held at peak, {allowed} allowed"
        resumed = stub.StreamNotifications(n.StreamNotificationsRequest(after=resume_from))
        try:
            async with asyncio.timeout(60):
                async for item in resumed:
                    if item.WhichOneof("item") == "notification":
                        received.extend(
                            (c.conversation_id, c.sequence, c.event.message)
                            for c in item.notification.body.changes
                        )
                        if len(received) >= total:
                            break
        finally:
            resumed.cancel()
    assert_complete(received, total)


@pytest.mark.slow  # traces every allocation
async def test_ten_thousand_subscribe_cancel_cycles_leave_nothing_behind(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    hub_code = [tracemalloc.Filter(True, str(ROOT / pkg / "*")) for pkg in ("server", "adapters")]
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        stub = ng.NotificationServiceStub(channel)
        assert hub.metrics is not None

        def open_streams() -> float:
            assert hub.metrics is not None
            sample = hub.metrics.registry.get_sample_value(
                "cimhub_stream_subscribers", {"transport": "grpc"}
            )
            return sample or 0.0

        async def cycles(count: int) -> tracemalloc.Snapshot | None:
            """What Python holds (when traced) once count cycles' subscriptions are gone."""
            for _ in range(count):
                call = stub.StreamNotifications(n.StreamNotificationsRequest())
                await call.read()
                call.cancel()
            # Gone from the bus, and every stream's call has run to its end
            # (the metrics wrapper counts it last), so no call still winding
            # down holds objects when the snapshot is taken.
            await eventually(lambda: hub.bus.subscriber_count == 0 and open_streams() == 0)
            # Garbage in reference cycles (a cancelled task and its
            # exception's frames) waits for the collector's next full pass,
            # which comes whenever it comes: collected first, it is not
            # counted as kept.
            gc.collect()
            return tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None

        # The first cycles fill what is made once (caches, pools, interned
        # names); untraced, as tracing slows every allocation down.
        await cycles(2_000)
        tracemalloc.start()
        try:
            plateau = await cycles(1_000)
            end = await cycles(7_000)
        finally:
            tracemalloc.stop()
    assert plateau is not None and end is not None
    everything = sum(d.size_diff for d in end.compare_to(plateau, "filename"))
    ours = sum(
        d.size_diff
        for d in end.filter_traces(hub_code).compare_to(plateau.filter_traces(hub_code), "filename")
    )
    print(
        f"\nfrom 3,000 to 10,000 cycles: Python memory {everything / 1e3:+.0f} kB,"
        f" of it allocated by the hub's code {ours / 1e3:+.0f} kB"
    )
    # A subscription leaves nothing of the hub's behind: one object kept per
    # cycle, even an empty one (56 bytes), would add up to 400 kB.
    assert ours < 7_000 * 8, "the hub keeps something of subscriptions that are gone"
    # Anywhere else (gRPC, asyncio) only what is in flight when counted: a
    # cancelled call's callbacks, some tens of kB.
    assert everything < 7_000 * 64, "memory grows with subscriptions that are gone"


async def test_a_thousand_subscribers_each_receive_a_whole_burst(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    subscribers, burst = 1000, 200
    async with running_hub(db_url, heartbeat_seconds=30) as hub:
        channels = [authed_channel(f"127.0.0.1:{hub.grpc_port}") for _ in range(10)]
        try:
            latencies: list[float] = []
            counts = [0] * subscribers
            calls = [
                ng.NotificationServiceStub(channels[i % len(channels)]).StreamNotifications(
                    n.StreamNotificationsRequest()
                )
                for i in range(subscribers)
            ]

            async def consume(i: int) -> None:
                async for item in calls[i]:
                    if item.WhichOneof("item") != "notification":
                        continue
                    now = time.time() * 1000
                    for change in item.notification.body.changes:
                        latencies.append(now - change.server_timestamp)
                        counts[i] += 1
                    if counts[i] >= burst:
                        return

            readers = [asyncio.create_task(consume(i)) for i in range(subscribers)]
            await eventually(lambda: hub.bus.subscriber_count == subscribers, within=60)
            await emit(hub, burst, chunk=20)
            async with asyncio.timeout(60):
                await asyncio.gather(*readers)
            for call in calls:
                call.cancel()
            # Let every cancelled call settle before its channel closes, so no
            # client task outlives the test.
            await asyncio.gather(*(call.code() for call in calls))
        finally:
            for ch in channels:
                await ch.close(grace=1)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"\nfan-out: {subscribers} subscribers x {burst} events; p50={p50:.0f} ms p99={p99:.0f} ms"
    )
    assert counts == [burst] * subscribers


async def test_a_cursor_older_than_retention_gets_an_explicit_reset(db_url: str) -> None:
    clock = FakeClock()
    async with running_hub(db_url, clock=clock) as hub, channel_to(hub) as channel:
        await emit(hub, 10, chunk=10)
        clock.advance(8 * 24 * 3600 * 1000)
        await emit(hub, 5, start=10, chunk=5)
        await hub.housekeeper.run_once()  # 7-day retention drops the first ten
        call = ng.NotificationServiceStub(channel).StreamNotifications(
            n.StreamNotificationsRequest(after="c0")
        )
        items = []
        try:
            async with asyncio.timeout(10):
                async for item in call:
                    items.append(item)
                    if sum(len(i.notification.body.changes) for i in items) >= 5:
                        break
        finally:
            call.cancel()
            await call.code()
    kinds = [i.WhichOneof("item") for i in items]
    assert kinds[:2] == ["heartbeat", "reset"]
    messages = [c.event.message for i in items for c in i.notification.body.changes]
    assert messages == ["m10", "m11", "m12", "m13", "m14"]


async def test_tenant_webhook_gets_signed_envelopes_in_conversation_order(db_url: str) -> None:
    hits: list[tuple[dict[str, str], bytes, int]] = []

    async def hook(request: web.Request) -> web.Response:
        status = 500 if not hits else 204  # the very first delivery is refused
        hits.append((dict(request.headers), await request.read(), status))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/events", hook)
    async with (
        serving(app) as base,
        running_hub(db_url, webhook_retry_base_ms=50) as hub,
        rest_session() as http,
    ):
        async with http.post(
            f"http://127.0.0.1:{hub.http_port}/api/v1/config/webhook",
            json={"url": f"{base}/events"},
        ) as resp:
            reply = await resp.json()
        assert resp.status == 200, reply
        secret = reply["data"]["secret"]["signingSecret"]
        await emit(hub, 20, chunk=5)
        await eventually(lambda: len(hits) >= 21, within=20)
    assert reply["data"]["webhook"] == f"{base}/events"
    for headers, body, _ in hits:
        assert verify(secret, headers, body)
        assert json.loads(body)["kind"] == "notification"
    refused_id = hits[0][0]["webhook-id"]
    assert [h["webhook-id"] for h, _, status in hits if status == 204].count(refused_id) == 1
    per_conversation: dict[str, list[int]] = defaultdict(list)
    for _, body, status in hits:
        if status == 204:
            change = json.loads(body)["body"]["changes"][0]
            per_conversation[change["conversationId"]].append(change["sequence"])
    assert sum(len(s) for s in per_conversation.values()) == 20
    for sequences in per_conversation.values():
        assert sequences == list(range(1, len(sequences) + 1))


async def test_webhook_envelope_matches_the_streamed_one(db_url: str) -> None:
    async with running_hub(db_url) as hub:
        await emit(hub, 3, chunk=3)
        stored = await hub.store.events.events_after(DEFAULT_TENANT, 0, 10)
    assert len(stored) == 3
    for event in stored:
        streamed = to_json(next(proto_notifications([event])).notification)
        assert envelope([event]) == streamed
