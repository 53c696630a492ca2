"""Load-generator worker, run as its own process by bench/run.py.

It reads one JSON command per line on stdin and answers one JSON line on
stdout: {"ok": true, "result": {...}} or {"ok": false, "error": "..."}.
Commands run one at a time, but the event loop keeps running between them, so
subscriptions opened by one command keep receiving while later ones run.

Operations:
- load:        closed-loop requests at a fixed concurrency for a fixed time
               (bare unary/batch, SendMessage, SendBatch, REST, bare HTTP,
               direct posts to the fake SMS provider)
- paced:       open-loop requests at a fixed rate (SendMessage / SendBatch whose
               text carries the send time)
- subscribe:   open N server streams (bare fan-out or StreamNotifications)
- arm / wait:  count what the streams receive from a moment on, with latencies
- unsubscribe: close every stream

Request payloads are serialised once and sent as bytes, so a bare baseline and
the platform cost the client the same per call. The exception is SendBatch,
whose every call carries destinations new to the hub (FreshBatches); the bare
batch server keeps nothing between calls, so its one payload flatters nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc
from google.protobuf import struct_pb2

from cim.v1 import messaging_service_pb2 as m
from cim.v1 import notification_service_pb2 as n
from cim.v1 import outbound_pb2 as o

GRPC_OPTIONS: list[tuple[str, Any]] = [
    # Each channel gets its own connection instead of sharing one subchannel.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]
SEND_MESSAGE = "/cim.v1.MessagingService/SendMessage"
SEND_BATCH = "/cim.v1.MessagingService/SendBatch"
STREAM = "/cim.v1.NotificationService/StreamNotifications"
_STAMP = struct.Struct("<d")
PHONE = "+447911123456"
# The credentials bench/run.py gives the hub to bootstrap; sent on every call
# (baselines too, so the client does the same work either way).
API_ID = "bench-app"
API_KEY = "YmVuY2gta2V5LWZvci1jaW1odWItbG9hZGdlbmVyYXQ"
AUTH_METADATA = (("x-api-id", API_ID), ("x-api-key", API_KEY))
AUTH_HEADERS = {"x-api-id": API_ID, "x-api-key": API_KEY}
# Pads a SendMessage request to ~300 bytes on the wire.
PAD = "Your parcel is on its way. " * 10


def now_ms() -> float:
    return time.time() * 1000.0


def send_message_request(channel_id: str, body: str, phone: str = PHONE) -> m.SendMessageRequest:
    return m.SendMessageRequest(
        channel_id=channel_id,
        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
        to=o.OutboundContact(phone=phone),
        text=o.OutboundText(body=body),
    )


def message_payload(channel_id: str, size: int = 300) -> bytes:
    """A serialised SendMessageRequest of about `size` bytes."""
    base = send_message_request(channel_id, "").ByteSize()
    body = (PAD * (1 + size // len(PAD)))[: max(1, size - base - 3)]
    return send_message_request(channel_id, body).SerializeToString()


def batch_request(
    channel: str, from_address: str, count: int, text: str, send_at: str = ""
) -> m.SendBatchRequest:
    numbers = [f"+4479111{i:05d}" for i in range(count)]
    return m.SendBatchRequest(
        channel=channel,
        from_address=from_address,
        to=[m.BatchDestination(msisdn=numbers)],
        content=m.BatchContent(type="text", text=text),
        send_at=send_at,
    )


# P2's numbers: +4479000000000 up, a range the hub's number plan accepts
# throughout; FRESH_NUMBERS of them before the first comes round again.
FRESH_BASE = 7_900_000_000
FRESH_NUMBERS = 10_000_000


class FreshBatches:
    """SendBatch payloads whose destinations no earlier batch of this worker had.

    A batch that repeats its numbers lets anything keyed by address (a
    conversation row, a cache) be found instead of made; P2 must pay for each
    destination as a new one. Building one costs the client about 0.3 ms.
    """

    # Shared by every instance: one hub serves all the runs of a scenario.
    _next = 0

    def __init__(self, request: m.SendBatchRequest) -> None:
        self._request = request
        self._count = len(request.to[0].msisdn)

    def __call__(self) -> bytes:
        start = FreshBatches._next
        FreshBatches._next = (start + self._count) % FRESH_NUMBERS
        numbers = self._request.to[0].msisdn
        del numbers[:]
        numbers.extend(f"+44{FRESH_BASE + (start + i) % FRESH_NUMBERS}" for i in range(self._count))
        return self._request.SerializeToString()


def bare_batch_payload(count: int) -> bytes:
    """The bare batch: the same destinations as a google.protobuf.ListValue."""
    values = [struct_pb2.Value(string_value=f"+4479111{i:05d}") for i in range(count)]
    return struct_pb2.ListValue(values=values).SerializeToString()


def rest_body(channel_id: str, size: int = 300) -> bytes:
    request = m.SendMessageRequest.FromString(message_payload(channel_id, size))
    return json.dumps(
        {
            "channelId": request.channel_id,
            "type": "text",
            "to": {"phone": request.to.phone},
            "text": {"body": request.text.body},
        }
    ).encode()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class HttpStatusError(Exception):
    pass


class Group:
    """A set of subscriber streams counted together (one per server under test)."""

    def __init__(self) -> None:
        self.channels: list[grpc.aio.Channel] = []
        self.calls: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.counts: list[int] = []
        self.threshold = 0.0
        self.expected = 0
        self.total = 0
        self.complete = 0
        self.items = 0
        self.first_recv = 0.0
        self.last_recv = 0.0
        self.hist: Counter[int] = Counter()
        self.done = asyncio.Event()
        self.stream_errors = 0
        self.last_error = ""
        self.change_bytes = 0

    def got(self, idx: int, k: int, now: float) -> None:
        before = self.counts[idx]
        self.counts[idx] = before + k
        self.total += k
        self.last_recv = now
        if not self.first_recv:
            self.first_recv = now
        if before < self.expected <= before + k:
            self.complete += 1
            if self.complete >= len(self.calls):
                self.done.set()

    async def read_bare(self, call: Any, idx: int) -> None:
        unpack = _STAMP.unpack_from
        try:
            async for item in call:
                now = now_ms()
                self.items += 1
                ts = unpack(item)[0]
                if ts >= self.threshold:
                    self.hist[int(now - ts)] += 1
                    self.got(idx, 1, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed(exc)

    async def read_project(self, call: Any, idx: int) -> None:
        hist = self.hist  # arm() clears it in place
        try:
            async for item in call:
                now = now_ms()
                self.items += 1
                if not item.HasField("notification"):
                    continue
                threshold = self.threshold
                k = 0
                for change in item.notification.body.changes:
                    ts = change.server_timestamp
                    if ts >= threshold:
                        k += 1
                        hist[int(now - ts)] += 1
                        if not self.change_bytes:
                            self.change_bytes = change.ByteSize()
                if k:
                    self.got(idx, k, now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed(exc)

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.CANCELLED:
            return
        self.stream_errors += 1
        self.last_error = repr(exc)[:300]

    def arm(self, threshold: float, expected: int) -> None:
        self.threshold = threshold
        self.expected = expected
        self.counts = [0] * len(self.calls)
        self.total = self.complete = self.items = 0
        self.first_recv = self.last_recv = 0.0
        self.hist.clear()
        self.done = asyncio.Event()

    def report(self) -> dict[str, Any]:
        return {
            "streams": len(self.calls),
            "alive": sum(1 for t in self.tasks if not t.done()),
            "complete": self.complete,
            "received": self.total,
            "expected": self.expected * len(self.calls),
            "items": self.items,
            "first_recv_ms": self.first_recv,
            "last_recv_ms": self.last_recv,
            "end_ms": now_ms(),
            "hist": {str(k): v for k, v in self.hist.items()},
            "stream_errors": self.stream_errors,
            "last_error": self.last_error,
            "change_bytes": self.change_bytes,
        }

    async def close(self) -> int:
        for call in self.calls:
            call.cancel()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        for channel in self.channels:
            await channel.close()
        return len(self.calls)


class Worker:
    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}

    # ------------------------------------------------------------ closed loop
    async def op_load(self, spec: dict[str, Any]) -> dict[str, Any]:
        kind = spec["kind"]
        concurrency = int(spec["concurrency"])
        call, cleanup = await self._caller(kind, spec, concurrency)
        try:
            # One call first: a misconfigured target fails here, loudly.
            await call()
            duration = float(spec["duration"])
            return await self._closed_loop(
                call,
                concurrency,
                float(spec["warmup"]),
                duration,
                int(spec.get("min_count", concurrency)),
                float(spec.get("max_duration", 4 * duration)),
            )
        finally:
            await cleanup()

    async def _caller(
        self, kind: str, spec: dict[str, Any], concurrency: int
    ) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
        target = spec["target"]
        if kind in ("bare_unary", "send_message", "bare_batch", "send_batch"):
            channel = grpc.aio.insecure_channel(target, options=GRPC_OPTIONS)
            if kind in ("bare_unary", "send_message"):
                payload = message_payload(spec.get("channel_id", "sandbox"))
            elif kind == "bare_batch":
                payload = bare_batch_payload(int(spec.get("items", 1000)))
            else:
                fresh = FreshBatches(
                    batch_request(
                        spec.get("channel", "sms"),
                        spec.get("from_address", "CNNECT"),
                        int(spec.get("items", 1000)),
                        "Your parcel is on its way.",
                        send_at=spec.get("send_at", ""),
                    )
                )
            path = {
                "bare_unary": "/bare.Bench/Unary",
                "bare_batch": "/bare.Bench/Batch",
                "send_message": SEND_MESSAGE,
                "send_batch": SEND_BATCH,
            }[kind]
            stub = channel.unary_unary(path)

            if kind == "send_batch":

                async def grpc_call() -> None:
                    await stub(fresh(), timeout=60, metadata=AUTH_METADATA)
            else:

                async def grpc_call() -> None:
                    await stub(payload, timeout=60, metadata=AUTH_METADATA)

            return grpc_call, channel.close
        if kind in ("rest_send", "bare_http", "twilio_direct"):
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency), trust_env=False
            )
            headers = {"Content-Type": "application/json", **AUTH_HEADERS}
            if kind == "twilio_direct":
                sid, token = spec["account_sid"], spec["auth_token"]
                url = f"{target}/2010-04-01/Accounts/{sid}/Messages.json"
                data = urllib.parse.urlencode(
                    {"To": PHONE, "From": "+447700000000", "Body": PAD[:160]}
                ).encode()
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Authorization": "Basic "
                    + base64.b64encode(f"{sid}:{token}".encode()).decode(),
                }
            else:
                url = f"{target}/api/v1/message/send"
                data = rest_body(spec.get("channel_id", "sandbox"))

            async def http_call() -> None:
                async with session.post(url, data=data, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        raise HttpStatusError(f"HTTP {resp.status}")

            return http_call, session.close
        raise ValueError(f"unknown load kind {kind!r}")

    async def _closed_loop(
        self,
        call: Callable[[], Awaitable[None]],
        concurrency: int,
        warmup: float,
        duration: float,
        min_count: int,
        max_duration: float,
    ) -> dict[str, Any]:
        """Completions per second in a window that starts after the warm-up.

        The window ends at the first completion after `duration` once at least
        `min_count` calls have completed in it, so slow calls (or calls a group
        commit finishes together) are still measured whole; it never runs past
        `max_duration`. A call that started before the window counts for the
        part of it inside the window. Calls still in flight at the end are
        cancelled.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        window_start = start + warmup
        soft_end = window_start + duration
        hard_end = window_start + max(duration, max_duration)
        latencies: list[float] = []
        credit = 0.0
        errors = 0
        first_error = ""
        last = window_start
        stop = asyncio.Event()

        async def runner() -> None:
            nonlocal errors, first_error, credit, last
            while not stop.is_set():
                t0 = loop.time()
                try:
                    await call()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    errors += 1
                    first_error = first_error or repr(exc)[:300]
                    await asyncio.sleep(0.01)
                    continue
                t1 = loop.time()
                if t1 < window_start or stop.is_set():
                    continue
                latencies.append(t1 - t0)
                credit += 1.0 if t0 >= window_start else (t1 - window_start) / (t1 - t0)
                last = t1
                if t1 >= soft_end and len(latencies) >= min_count:
                    stop.set()

        tasks = [asyncio.create_task(runner()) for _ in range(concurrency)]
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, hard_end - loop.time())):
                    await stop.wait()
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Stopped by a completion: the window ends there; else at the hard end.
        end = last if len(latencies) >= min_count and last >= soft_end else hard_end
        window = max(1e-3, end - window_start)
        return {
            "count": len(latencies),
            "window": window,
            "rate": credit / window,
            "errors": errors,
            "first_error": first_error,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
        }

    # --------------------------------------------------------------- open loop
    async def op_paced(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Requests at `rate` per second for `duration`; texts start "bench:<send ms>:"."""
        kind, rate, duration = spec["kind"], float(spec["rate"]), float(spec["duration"])
        channel = grpc.aio.insecure_channel(spec["target"], options=GRPC_OPTIONS)
        if kind == "send_message":
            stub = channel.unary_unary(SEND_MESSAGE)
            template = send_message_request(spec["channel_id"], "")

            def payload() -> bytes:
                template.text.body = f"bench:{now_ms():.3f}:{PAD[:100]}"
                return template.SerializeToString()
        elif kind == "send_batch":
            stub = channel.unary_unary(SEND_BATCH)
            batch = batch_request(
                spec["channel"],
                spec["from_address"],
                int(spec["items"]),
                "",
                spec.get("send_at", ""),
            )

            def payload() -> bytes:
                batch.content.text = f"bench:{now_ms():.3f}:{PAD[:100]}"
                return batch.SerializeToString()
        else:
            raise ValueError(f"unknown paced kind {kind!r}")
        items = int(spec.get("items", 1))
        sent = errors = 0
        first_error = ""
        limit = asyncio.Semaphore(int(spec.get("max_outstanding", 2000)))
        # With backlog_url (the fake provider), offering pauses while more than
        # max_backlog messages are accepted but not yet at the provider.
        backlog_url = spec.get("backlog_url")
        max_backlog = int(spec.get("max_backlog", 0))
        session = aiohttp.ClientSession(trust_env=False) if backlog_url else None
        backlog_waits = 0.0

        async def provider_count() -> int:
            assert session is not None
            async with session.get(backlog_url) as resp:
                return int((await resp.json())["count"])

        async def one(body: bytes) -> None:
            nonlocal errors, first_error
            try:
                await stub(body, timeout=120, metadata=AUTH_METADATA)
            except Exception as exc:
                errors += 1
                first_error = first_error or repr(exc)[:300]
            finally:
                limit.release()

        loop = asyncio.get_running_loop()
        start = anchor = loop.time()
        end = start + duration
        # With a count, exactly that many requests go out (the pace may run late).
        count = int(spec.get("count", 0))
        pending: set[asyncio.Task[None]] = set()
        i = 0
        try:
            while True:
                slot = anchor + i / rate
                if (count and sent >= count) or (not count and slot >= end):
                    break
                delay = slot - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if session is not None:
                    paused = loop.time()
                    while True:
                        backlog = sent * items - await provider_count()
                        if backlog <= max_backlog or loop.time() >= end:
                            break
                        await asyncio.sleep(0.05)
                    waited = loop.time() - paused
                    if waited > 0.01:
                        backlog_waits += waited
                        anchor, i = loop.time(), 0  # resume the pace from here
                    if loop.time() >= end:
                        break
                await limit.acquire()
                task = asyncio.create_task(one(payload()))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
                i += 1
            offered_for = max(1e-3, loop.time() - start)
            if pending:
                await asyncio.wait(pending, timeout=120)
        finally:
            await channel.close()
            if session is not None:
                await session.close()
        return {
            "sent": sent,
            "items": sent * items,
            "errors": errors,
            "first_error": first_error,
            "offered_seconds": offered_for,
            "backlog_wait_seconds": backlog_waits,
            "elapsed": loop.time() - start,
        }

    # ------------------------------------------------------------- streaming
    async def op_subscribe(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Open `count` streams over `channels` connections into group `group`."""
        kind, count, nch = spec["kind"], int(spec["count"]), int(spec["channels"])
        group = self.groups.setdefault(spec["group"], Group())
        chans = [
            grpc.aio.insecure_channel(spec["target"], options=GRPC_OPTIONS) for _ in range(nch)
        ]
        group.channels += chans
        for i in range(count):
            channel = chans[i % nch]
            idx = len(group.calls)
            group.counts.append(0)
            if kind == "bare":
                call = channel.unary_stream("/bare.Fanout/Subscribe")(b"", metadata=AUTH_METADATA)
                reader = group.read_bare(call, idx)
            else:
                stub = channel.unary_stream(
                    STREAM, response_deserializer=n.StreamNotificationsResponse.FromString
                )
                request = n.StreamNotificationsRequest(channel_id=spec.get("channel_id", ""))
                call = stub(request.SerializeToString(), metadata=AUTH_METADATA)
                reader = group.read_project(call, idx)
            group.calls.append(call)
            group.tasks.append(asyncio.create_task(reader))
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the streams start
        return {"streams": len(group.calls)}

    async def op_arm(self, spec: dict[str, Any]) -> dict[str, Any]:
        group = self.groups[spec["group"]]
        group.arm(float(spec["threshold_ms"]), int(spec["expected"]))
        return {"streams": len(group.calls)}

    async def op_wait(self, spec: dict[str, Any]) -> dict[str, Any]:
        group = self.groups[spec["group"]]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(float(spec["timeout"])):
                await group.done.wait()
        return group.report()

    async def op_unsubscribe(self, spec: dict[str, Any]) -> dict[str, Any]:
        names = [spec["group"]] if spec.get("group") else list(self.groups)
        closed = 0
        for name in names:
            if name in self.groups:
                closed += await self.groups.pop(name).close()
        return {"closed": closed}


async def main() -> None:
    worker = Worker()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    while line := await reader.readline():
        try:
            spec = json.loads(line)
            op = getattr(worker, "op_" + spec.pop("op"))
            reply = {"ok": True, "result": await op(spec)}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    await worker.op_unsubscribe({})


if __name__ == "__main__":
    asyncio.run(main())
