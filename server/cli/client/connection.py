"""What every client command shares: the connection flags, the call metadata,
the run wrapper that turns failures into one message and an exit code, and the
output helpers.

Failures print the server's reason and the offending field paths (from the
google.rpc status details) and exit non-zero; there is no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from cim.v1 import delivery_pb2
from server.gateway.envelope import error_from_status

DEFAULT_TARGET = "localhost:50051"

Handler = Callable[[argparse.Namespace], int]
Command = Callable[[argparse.Namespace, grpc.aio.Channel], Awaitable[int]]


class CliError(Exception):
    """A failure already phrased for the user."""


def connection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get("CIMHUB_TARGET", DEFAULT_TARGET),
        help=f"server gRPC address (env CIMHUB_TARGET, default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--api-id", default=os.environ.get("CIMHUB_API_ID", ""), help="API id (env CIMHUB_API_ID)"
    )
    group.add_argument(
        "--api-key",
        default=os.environ.get("CIMHUB_API_KEY", ""),
        help="API key (env CIMHUB_API_KEY)",
    )
    group.add_argument(
        "--token", default=os.environ.get("CIMHUB_TOKEN", ""), help="JWT bearer token"
    )
    group.add_argument("--timeout", type=float, default=30.0, help="per-call deadline, seconds")


def metadata_of(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.token:
        return [("authorization", f"Bearer {args.token}")]
    pairs = []
    if args.api_id:
        pairs.append(("x-api-id", args.api_id))
    if args.api_key:
        pairs.append(("x-api-key", args.api_key))
    return pairs


def describe_rpc_error(exc: grpc.aio.AioRpcError) -> str:
    """The server's status, reason and field violations, one per line."""
    error = error_from_status(exc.code(), exc.details() or "", exc.trailing_metadata())
    lines = [f"error: {error.status_key} {error.reason}: {error.message}"]
    lines.extend(f"  {e.field}: {e.description}" for e in error.errors)
    return "\n".join(lines)


def run(command: Command) -> Handler:
    """A parser handler running command on a channel to --target."""

    def handler(args: argparse.Namespace) -> int:
        async def main() -> int:
            async with grpc.aio.insecure_channel(args.target) as channel:
                return await command(args, channel)

        try:
            return asyncio.run(main())
        except grpc.aio.AioRpcError as exc:
            print(describe_rpc_error(exc), file=sys.stderr)
            return 1
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130

    return handler


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), flush=True)


def status_name(value: int) -> str:
    """A delivery status as the domain spells it (DELIVERED, not DELIVERY_STATUS_DELIVERED)."""
    name = delivery_pb2.DeliveryStatus.Name(value)  # type: ignore[arg-type]
    return str(name).removeprefix("DELIVERY_STATUS_")
