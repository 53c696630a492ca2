"""Bare gRPC baseline: empty unary handler and a bare batch transport.

No project code is involved: a generic handler takes and returns raw bytes.

- /bare.Bench/Unary: takes the request (the bench sends ~300 bytes) and
  answers an empty message.
- /bare.Bench/Batch: a bare batch transport. The request is a
  google.protobuf.ListValue of destinations (the bench sends 1000); the handler
  decodes it and answers a ListValue with one new id (uuid4) per destination:
  the per-item work any batch API does, without validation or storage.

Prints "bare-grpc: listening on HOST:PORT" once serving; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid

import grpc
from google.protobuf import struct_pb2


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""

    async def batch(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        items = struct_pb2.ListValue.FromString(request).values
        ids = [struct_pb2.Value(string_value=str(uuid.uuid4())) for _ in items]
        return struct_pb2.ListValue(values=ids).SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "bare.Bench",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Batch": grpc.unary_unary_rpc_method_handler(batch),
        },
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.max_send_message_length", 8 << 20),
        ]
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    print(f"bare-grpc: listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    asyncio.run(main())
