"""Bare server-streaming fan-out: one event per stream message.

No project code is involved; handlers take and return raw bytes.

- /bare.Fanout/Subscribe (server streaming): registers a queue and streams
  every published event as its own message.
- /bare.Fanout/Publish (unary): request is JSON {"count": N, "rate": R,
  "size": S}. Publishes N events of S bytes to every subscriber, R per second
  (R = 0: all at once, a burst). Each event starts with its creation time
  (little-endian double, ms since the epoch), like a change's server_timestamp.
  Answers at once; publishing goes on in the background.
- /bare.Fanout/Count (unary): the number of open subscriptions, as ASCII.

Prints "bare-fanout: listening on HOST:PORT" once serving; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import time
from collections.abc import AsyncIterator

import grpc

_STAMP = struct.Struct("<d")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    subscribers: set[asyncio.Queue[bytes]] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def subscribe(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)

    def event(size: int) -> bytes:
        stamp = _STAMP.pack(time.time() * 1000.0)
        return stamp + b"e" * max(0, size - len(stamp))

    async def publish_paced(count: int, rate: float, size: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(count):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            item = event(size)
            for queue in subscribers:
                queue.put_nowait(item)

    async def publish(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        spec = json.loads(request)
        count, rate, size = int(spec["count"]), float(spec.get("rate", 0)), int(spec["size"])
        if rate <= 0:
            for _ in range(count):
                item = event(size)
                for queue in subscribers:
                    queue.put_nowait(item)
        else:
            task = asyncio.create_task(publish_paced(count, rate, size))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return b""

    async def count(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return str(len(subscribers)).encode()

    handler = grpc.method_handlers_generic_handler(
        "bare.Fanout",
        {
            "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe),
            "Publish": grpc.unary_unary_rpc_method_handler(publish),
            "Count": grpc.unary_unary_rpc_method_handler(count),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    print(f"bare-fanout: listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    asyncio.run(main())
