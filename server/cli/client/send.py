"""`cimhub send`: one message, or with --batch every row of a CSV file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc

from cim.v1 import content_pb2, messaging_service_pb2, messaging_service_pb2_grpc, outbound_pb2
from server.cli.client.batch import (
    BATCH_KINDS,
    batch_request,
    destination,
    pairs,
    send_batch,
)
from server.cli.client.connection import CliError, connection_flags, metadata_of, run, status_name


def register(subparsers: Any) -> None:
    send = subparsers.add_parser(
        "send",
        help="send a message, or a CSV file of them",
        description="Send one message, or every row of a CSV file with --batch. With "
        "--channel sms|email|rcs|whatsapp the batch API picks the channel by --from; "
        "any other value names a channel id.",
    )
    send.add_argument("--channel", required=True, help="sms, email, rcs, whatsapp or a channel id")
    send.add_argument("--from", dest="from_address", default="", help="sender lane or address")
    send.add_argument("--to", default="", help="recipient number or address")
    send.add_argument("--text", default="", help="message text; $(name) placeholders allowed")
    send.add_argument("--subject", default="", help="email subject")
    send.add_argument("--template", default="", help="template code instead of --text")
    send.add_argument("--lang", default="", help="template language")
    send.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="substitution for every recipient (repeatable)",
    )
    send.add_argument(
        "--batch",
        type=Path,
        help="CSV with a 'to' column (also: correlationId, other columns are per-row "
        "substitutions); sent in chunks of 1000",
    )
    send.add_argument("--out", type=Path, help="write per-row results to this CSV (--batch)")
    send.add_argument(
        "--resume",
        type=Path,
        metavar="RESULT.csv",
        help="with --batch: send only the rows this earlier result file gives no message "
        "id, and write the results back to it unless --out says otherwise",
    )
    send.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for final delivery statuses (--batch)",
    )
    send.add_argument(
        "--wait-timeout", type=float, default=120.0, help="seconds to wait for final statuses"
    )
    connection_flags(send)
    send.set_defaults(handler=run(_send))


async def _send(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    if args.batch is not None:
        return await send_batch(args, channel)
    if not args.to:
        raise CliError("--to is required without --batch")
    if not (args.text or args.template):
        raise CliError("give --text or --template")
    stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
    md = metadata_of(args)
    if args.channel.lower() in BATCH_KINDS:
        request = batch_request(args)
        request.to.add(**destination(request.channel, args.to))
        reply = await stub.SendBatch(request, metadata=md, timeout=args.timeout)
        result = reply.results[0]
        if result.error:
            print(f"error: {result.destination}: {result.error}", file=sys.stderr)
            return 1
        print(f"{result.message_id} {status_name(result.status)}", flush=True)
        return 0
    single = messaging_service_pb2.SendMessageRequest(channel_id=args.channel)
    single.to.phone = args.to if "@" not in args.to else ""
    single.to.email = args.to if "@" in args.to else ""
    if args.template:
        single.type = outbound_pb2.OUTBOUND_MESSAGE_TYPE_TEMPLATE
        single.template.CopyFrom(content_pb2.TemplateRef(code=args.template, lang=args.lang))
        single.template.data.update(pairs(args.var, "--var"))
    else:
        single.type = outbound_pb2.OUTBOUND_MESSAGE_TYPE_TEXT
        single.text.body = args.text
    sent = await stub.SendMessage(single, metadata=md, timeout=args.timeout)
    print(f"{sent.message_id} {status_name(sent.status)}", flush=True)
    return 0
