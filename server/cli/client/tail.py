"""`cimhub tail`: live events, one line each, until interrupted."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from cim.v1 import notification_service_pb2, notification_service_pb2_grpc
from server.cli.client.connection import connection_flags, metadata_of, run
from server.gateway.jsonmap import to_json


def register(subparsers: Any) -> None:
    tail = subparsers.add_parser(
        "tail",
        help="print live events as they happen",
        description="Stream live events, one line each, until interrupted.",
    )
    tail.add_argument("--after", default="", help="resume after this cursor")
    tail.add_argument("--conversation", action="append", default=[], help="conversation id")
    tail.add_argument("--customer", default="", help="customer (contact) id")
    tail.add_argument("--channel", default="", help="channel id")
    tail.add_argument(
        "--type", action="append", default=[], help="event type, e.g. DeliveryStatusEvent"
    )
    tail.add_argument("--json", action="store_true", help="print each change as JSON")
    tail.add_argument("--count", type=int, default=0, help="stop after this many events")
    connection_flags(tail)
    tail.set_defaults(handler=run(_tail))


def format_change(change: Any) -> str:
    e = change.event
    stamp = time.strftime("%H:%M:%S", time.localtime(change.server_timestamp / 1000))
    millis = change.server_timestamp % 1000
    parts = [f"{stamp}.{millis:03d}", f"{e.type:<24}"]
    for label, value in (
        ("conv", change.conversation_id[:8]),
        ("msg", e.message_id),
        ("status", e.status),
        ("channel", e.channel_id),
        ("customer", e.customer_id),
    ):
        if value:
            parts.append(f"{label}={value}")
    if e.message:
        parts.append(json.dumps(e.message, ensure_ascii=False))
    if e.HasField("data") and e.type not in ("DeliveryStatusEvent",):
        parts.append(json.dumps(MessageToDict(e.data), ensure_ascii=False, sort_keys=True))
    return " ".join(parts)


async def _tail(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    stub = notification_service_pb2_grpc.NotificationServiceStub(channel)
    request = notification_service_pb2.StreamNotificationsRequest(
        after=args.after,
        conversation_ids=args.conversation,
        customer_id=args.customer,
        channel_id=args.channel,
        event_types=args.type,
    )
    call = stub.StreamNotifications(request, metadata=metadata_of(args))
    shown = 0
    announced = False
    # read(), not async-for, so the first item can mark the subscription live.
    while True:
        item = await call.read()
        if item is grpc.aio.EOF:
            return 0
        if not announced:
            # The server's first item (a heartbeat, or replayed events) means the
            # subscription is in place: anything that happens now will show.
            print("# streaming live events", file=sys.stderr, flush=True)
            announced = True
        kind = item.WhichOneof("item")
        if kind == "reset":
            print(f"# reset: {item.reset.reason}", file=sys.stderr, flush=True)
            continue
        if kind != "notification":
            continue
        for change in item.notification.body.changes:
            if args.json:
                print(json.dumps(to_json(change), sort_keys=True), flush=True)
            else:
                print(format_change(change), flush=True)
            shown += 1
            if args.count and shown >= args.count:
                call.cancel()
                return 0
