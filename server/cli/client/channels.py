"""`cimhub channels list`: the hub's channels, credentials redacted."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from cim.v1 import config_service_pb2, config_service_pb2_grpc
from server.cli.client.connection import connection_flags, metadata_of, print_json, run
from server.gateway.jsonmap import to_json


def register(subparsers: Any) -> None:
    channels = subparsers.add_parser("channels", help="list channels")
    sub = channels.add_subparsers(dest="channels_command", required=True)
    listing = sub.add_parser("list", help="list channels, credentials redacted")
    listing.add_argument("--sandbox", action="store_true", help="include sandbox channels")
    listing.add_argument("--json", action="store_true")
    connection_flags(listing)
    listing.set_defaults(handler=run(_channels_list))


async def _channels_list(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    stub = config_service_pb2_grpc.ConfigServiceStub(channel)
    reply = await stub.ListChannels(
        config_service_pb2.ListChannelsRequest(sandbox=args.sandbox),
        metadata=metadata_of(args),
        timeout=args.timeout,
    )
    if args.json:
        print_json(to_json(reply))
        return 0
    table = Table("id", "type", "provider", "lane", "name", "tps")
    for c in reply.results:
        table.add_row(c.channel_id, c.contact_type, c.provider, c.lane, c.name, str(c.tps))
    Console().print(table)
    return 0
