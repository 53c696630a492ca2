"""cimhub client commands: send, tail, sessions, templates and channels over gRPC.

They talk to a running server with the generated stubs, like any other client.
Failures print the server's reason and the offending field paths (from the
google.rpc status details) and exit non-zero; there is no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cim.v1 import (
    config_service_pb2,
    config_service_pb2_grpc,
    content_pb2,
    delivery_pb2,
    messaging_service_pb2,
    messaging_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
    outbound_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)
from server.gateway.envelope import error_from_status
from server.gateway.jsonmap import to_json

DEFAULT_TARGET = "localhost:50051"
CHUNK = 1000  # the most destinations one SendBatch takes
# Seconds without a status from the stream before the server is asked directly.
QUIET_S = 5.0
BATCH_KINDS = ("sms", "email", "rcs", "whatsapp")
TERMINAL = frozenset(
    {"DELIVERED", "UNDELIVERED", "READ", "CLICKED", "FAILED", "EXPIRED", "CANCELLED"}
)
RESULT_COLUMNS = (
    "row",
    "correlationId",
    "destination",
    "messageId",
    "status",
    "errorCode",
    "field",
    "error",
)
# A refused row's field as the server names it in a batch request: to[i].<path>.
_ROW_FIELD = re.compile(r"^to\[(\d+)\](?:\.(.*))?$")

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A failure already phrased for the user."""


# -- connection ----------------------------------------------------------------------


def _connection_flags(parser: argparse.ArgumentParser) -> None:
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


def _run(command: Callable[[argparse.Namespace, grpc.aio.Channel], Awaitable[int]]) -> Handler:
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


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), flush=True)


# -- registration ----------------------------------------------------------------------


def register(subparsers: Any) -> None:
    _register_send(subparsers)
    _register_tail(subparsers)
    _register_sessions(subparsers)
    _register_templates(subparsers)
    _register_channels(subparsers)


def _register_send(subparsers: Any) -> None:
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
    _connection_flags(send)
    send.set_defaults(handler=_run(_send))


def _register_tail(subparsers: Any) -> None:
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
    _connection_flags(tail)
    tail.set_defaults(handler=_run(_tail))


def _register_sessions(subparsers: Any) -> None:
    sessions = subparsers.add_parser("sessions", help="list, close, resolve or route sessions")
    sub = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sub.add_parser("list", help="list sessions")
    listing.add_argument("--contact", default="", help="only this contact's sessions")
    listing.add_argument("--state", default="", help="ACTIVE, RESOLVED or CLOSED")
    listing.add_argument("--queue", default="")
    listing.add_argument("--page-size", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    _connection_flags(listing)
    listing.set_defaults(handler=_run(_sessions_list))
    for name, text in (("close", "close a session"), ("resolve", "resolve a session")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("session_id")
        _connection_flags(cmd)
        cmd.set_defaults(handler=_run(_sessions_end), end=name)
    route = sub.add_parser("route", help="route a session to a queue, agent or team")
    route.add_argument("session_id")
    route.add_argument("--queue", default="")
    route.add_argument("--agent", default="")
    route.add_argument("--team", default="")
    route.add_argument("--skill", action="append", default=[])
    _connection_flags(route)
    route.set_defaults(handler=_run(_sessions_route))


def _register_templates(subparsers: Any) -> None:
    templates = subparsers.add_parser("templates", help="list or create message templates")
    sub = templates.add_subparsers(dest="templates_command", required=True)
    listing = sub.add_parser("list", help="list templates")
    listing.add_argument("--channel-id", default="", help="only templates known on this channel")
    listing.add_argument("--status", default="", help="with --channel-id: APPROVED, PENDING...")
    listing.add_argument("--json", action="store_true")
    _connection_flags(listing)
    listing.set_defaults(handler=_run(_templates_list))
    create = sub.add_parser("create", help="create a template")
    create.add_argument("--code", required=True)
    create.add_argument("--lang", required=True)
    create.add_argument("--body", required=True, help="text with $(name) placeholders")
    create.add_argument("--category", default="")
    create.add_argument("--header", default="")
    create.add_argument("--footer", default="")
    create.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="CHANNEL[=STATUS]",
        help="approval on a channel, APPROVED unless given (repeatable)",
    )
    _connection_flags(create)
    create.set_defaults(handler=_run(_templates_create))


def _register_channels(subparsers: Any) -> None:
    channels = subparsers.add_parser("channels", help="list channels")
    sub = channels.add_subparsers(dest="channels_command", required=True)
    listing = sub.add_parser("list", help="list channels, credentials redacted")
    listing.add_argument("--sandbox", action="store_true", help="include sandbox channels")
    listing.add_argument("--json", action="store_true")
    _connection_flags(listing)
    listing.set_defaults(handler=_run(_channels_list))


# -- send ------------------------------------------------------------------------------


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"{flag} takes NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def _batch_request(args: argparse.Namespace) -> messaging_service_pb2.SendBatchRequest:
    request = messaging_service_pb2.SendBatchRequest(
        channel=args.channel.lower(),
        from_address=args.from_address,
        substitutions=_pairs(args.var, "--var"),
    )
    if args.template:
        request.template.CopyFrom(
            messaging_service_pb2.BatchTemplate(code=args.template, lang=args.lang)
        )
    else:
        request.content.CopyFrom(
            messaging_service_pb2.BatchContent(type="text", text=args.text, subject=args.subject)
        )
    return request


def _destination(kind: str, address: str) -> dict[str, list[str]]:
    return {"email": [address]} if kind == "email" else {"msisdn": [address]}


async def _send(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    if args.batch is not None:
        return await _send_batch(args, channel)
    if not args.to:
        raise CliError("--to is required without --batch")
    if not (args.text or args.template):
        raise CliError("give --text or --template")
    stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
    md = metadata_of(args)
    if args.channel.lower() in BATCH_KINDS:
        request = _batch_request(args)
        request.to.add(**_destination(request.channel, args.to))
        reply = await stub.SendBatch(request, metadata=md, timeout=args.timeout)
        result = reply.results[0]
        if result.error:
            print(f"error: {result.destination}: {result.error}", file=sys.stderr)
            return 1
        print(f"{result.message_id} {_status_name(result.status)}", flush=True)
        return 0
    single = messaging_service_pb2.SendMessageRequest(channel_id=args.channel)
    single.to.phone = args.to if "@" not in args.to else ""
    single.to.email = args.to if "@" in args.to else ""
    if args.template:
        single.type = outbound_pb2.OUTBOUND_MESSAGE_TYPE_TEMPLATE
        single.template.CopyFrom(content_pb2.TemplateRef(code=args.template, lang=args.lang))
        single.template.data.update(_pairs(args.var, "--var"))
    else:
        single.type = outbound_pb2.OUTBOUND_MESSAGE_TYPE_TEXT
        single.text.body = args.text
    sent = await stub.SendMessage(single, metadata=md, timeout=args.timeout)
    print(f"{sent.message_id} {_status_name(sent.status)}", flush=True)
    return 0


def _status_name(value: int) -> str:
    name = delivery_pb2.DeliveryStatus.Name(value)  # type: ignore[arg-type]
    return str(name).removeprefix("DELIVERY_STATUS_")


@dataclass
class Row:
    number: int
    correlation_id: str
    destination: str
    substitutions: dict[str, str]
    message_id: str = ""
    status: str = ""
    error_code: str = ""
    field: str = ""
    error: str = ""

    def refuse(self, code: str, field: str, why: str) -> None:
        self.status, self.error_code, self.field, self.error = "REJECTED", code, field, why


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "to" not in reader.fieldnames:
            raise CliError(f"{path}: the first line must name the columns, including 'to'")
        rows = []
        for number, record in enumerate(reader, start=1):
            to = (record.pop("to") or "").strip()
            correlation = (record.pop("correlationId", "") or "").strip() or f"row-{number}"
            subs = {k: v or "" for k, v in record.items() if k}
            rows.append(Row(number, correlation, to, subs))
    if not rows:
        raise CliError(f"{path}: no rows")
    return rows


def read_results(path: Path) -> dict[int, tuple[str, str]]:
    """Row number -> (message id, status) of the rows an earlier run had accepted."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"row", "messageId"} <= set(reader.fieldnames):
                raise CliError(f"{path}: not a result file of 'cimhub send --batch'")
            return {
                int(r["row"]): (r["messageId"], r.get("status") or "")
                for r in reader
                if r.get("messageId") and (r.get("row") or "").isdigit()
            }
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from exc


def _chunks(rows: list[Row], size: int) -> Iterator[list[Row]]:
    """Rows in the windows of the file they fall in, so a resumed run groups the
    rows left over the way the first run did."""
    window: list[Row] = []
    for row in rows:
        if window and (row.number - 1) // size != (window[0].number - 1) // size:
            yield window
            window = []
        window.append(row)
    if window:
        yield window


def request_key(template: messaging_service_pb2.SendBatchRequest, rows: Sequence[Row]) -> str:
    """An idempotency key from what is sent: the options and these rows of the file.

    A resumed or repeated run sends the same rows under the same key, so the
    server answers with the messages it already accepted instead of sending
    them again.
    """
    digest = hashlib.sha256(template.SerializeToString(deterministic=True))
    for row in rows:
        line = [row.number, row.correlation_id, row.destination, sorted(row.substitutions.items())]
        digest.update(json.dumps(line).encode())
    return f"cimhub-cli:{digest.hexdigest()[:48]}"


def _row_field(path: str) -> tuple[int, str] | None:
    """(index in the request, the file's column) of a violation naming one row."""
    found = _ROW_FIELD.match(path)
    if found is None:
        return None
    rest = found.group(2) or ""
    if rest.startswith("substitutions."):
        column = rest.removeprefix("substitutions.")
    elif rest == "correlationId":
        column = rest
    else:
        column = "to"
    return int(found.group(1)), column


@dataclass
class _Tracker:
    """Final statuses from the live event stream, for the messages of this run."""

    wanted: dict[str, Row] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    remaining: int = 0

    def update(self, message_id: str, status: str) -> bool:
        if status not in TERMINAL:
            return False
        first = message_id not in self.seen
        self.seen[message_id] = status
        row = self.wanted.get(message_id)
        if row is not None and first:
            row.status = status
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()
            return True
        return False


async def _send_batch(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    if args.channel.lower() not in BATCH_KINDS:
        raise CliError("--batch needs --channel sms, email, rcs or whatsapp")
    if not (args.text or args.template):
        raise CliError("give --text or --template")
    if args.resume is not None and args.batch is None:
        raise CliError("--resume needs --batch with the file the results are of")
    rows = read_rows(args.batch)
    md = metadata_of(args)
    stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
    template = _batch_request(args)
    tracker = _Tracker()
    wait = not args.no_wait
    # Subscribe before sending, so no final status can slip past.
    events = notification_service_pb2_grpc.NotificationServiceStub(channel).StreamNotifications(
        notification_service_pb2.StreamNotificationsRequest(event_types=["DeliveryStatusEvent"]),
        metadata=md,
    )
    reader: asyncio.Task[None] | None = None
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    out = args.out or args.resume
    if args.resume is not None:
        earlier = read_results(args.resume)
        for row in rows:
            row.message_id, row.status = earlier.get(row.number, ("", ""))
    todo = [row for row in rows if not row.message_id]
    sending = progress.add_task("accepted", total=len(todo))
    final = progress.add_task("final", total=len(todo), visible=wait)
    tracker.remaining = len(todo)
    # Off a terminal the bar cannot redraw; plain lines show progress instead.
    plain = not console.is_terminal
    try:
        if wait:
            # The first item (a heartbeat or an event) shows the subscription is live.
            first = await events.read()
            if first is grpc.aio.EOF:
                raise CliError("event stream closed before sending")
            reader = asyncio.create_task(_follow(events, tracker, progress, final))
        with progress:
            sent = 0
            for chunk in _chunks(todo, CHUNK):
                accepted, refused = await _send_rows(stub, template, chunk, md, args.timeout)
                tracker.remaining -= len(refused)
                progress.advance(final, len(refused))
                if accepted is not None:
                    _record(*accepted, tracker, progress, final)
                elif tracker.remaining <= 0:
                    tracker.done.set()
                sent += len(chunk)
                progress.update(sending, completed=sent)
                if plain:
                    print(f"accepted {sent}/{len(todo)}", file=sys.stderr, flush=True)
            if wait and tracker.remaining > 0:
                await _wait_final(stub, md, args, tracker, progress, final)
    finally:
        events.cancel()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        # Even when the run stops early: the rows without a message id are
        # what --resume sends.
        if out is not None:
            write_results(out, rows)
    if plain and wait:
        print(f"final {len(todo) - tracker.remaining}/{len(todo)}", file=sys.stderr, flush=True)
    print(_summary(rows), flush=True)
    # Waiting, exit 3 when any row did not end delivered; without waiting, when
    # any row was refused.
    ok = (
        ("DELIVERED", "READ", "CLICKED")
        if wait
        else ("ACCEPTED", "SCHEDULED", "SUBMITTED", *TERMINAL)
    )
    return 0 if all(r.status in ok and not r.error for r in rows) else 3


async def _send_rows(
    stub: Any,
    template: messaging_service_pb2.SendBatchRequest,
    chunk: list[Row],
    md: list[tuple[str, str]],
    deadline: float,
) -> tuple[tuple[list[Row], messaging_service_pb2.SendBatchResponse] | None, list[Row]]:
    """Send a chunk's rows; rows the server refuses by name are marked and the
    rest sent again without them. Returns (the rows sent with the reply, the
    refused rows)."""
    pending, refused = list(chunk), list[Row]()
    while pending:
        request = messaging_service_pb2.SendBatchRequest()
        request.CopyFrom(template)
        for row in pending:
            dest = request.to.add(
                correlation_id=row.correlation_id,
                **_destination(request.channel, row.destination),
            )
            dest.substitutions.update(row.substitutions)
        request.request_id = request_key(template, pending)
        try:
            return (pending, await _send_chunk(stub, request, md, deadline)), refused
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            error = error_from_status(exc.code(), exc.details() or "", exc.trailing_metadata())
        named: dict[int, tuple[str, str]] = {}
        for violation in error.errors:
            at = _row_field(violation.field)
            if at is not None and at[0] < len(pending):
                named.setdefault(at[0], (at[1], violation.description))
        if not named:
            # The request as a whole is refused (its text, say): so is every row.
            where = error.errors[0].field if error.errors else ""
            why = error.errors[0].description if error.errors else error.message
            for row in pending:
                row.refuse(error.reason, where, why)
            return None, refused + pending
        for index, (column, why) in named.items():
            pending[index].refuse(error.reason, column, why)
            refused.append(pending[index])
        pending = [row for i, row in enumerate(pending) if i not in named]
    return None, refused


async def _send_chunk(
    stub: Any,
    request: messaging_service_pb2.SendBatchRequest,
    md: list[tuple[str, str]],
    deadline: float,
) -> messaging_service_pb2.SendBatchResponse:
    for attempt in range(3):
        try:
            reply: messaging_service_pb2.SendBatchResponse = await stub.SendBatch(
                request, metadata=md, timeout=deadline
            )
            return reply
        except grpc.aio.AioRpcError as exc:
            retryable = exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            if not retryable or attempt == 2:
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def _record(
    chunk: list[Row],
    reply: messaging_service_pb2.SendBatchResponse,
    tracker: _Tracker,
    progress: Progress,
    final_task: TaskID,
) -> None:
    for row, result in zip(chunk, reply.results, strict=False):
        if result.error:
            row.refuse("DESTINATION_REFUSED", "to", result.error)
            tracker.remaining -= 1
            progress.advance(final_task)
            continue
        row.message_id = result.message_id
        status = tracker.seen.get(result.message_id)
        if status is not None:
            row.status = status
            tracker.remaining -= 1
            progress.advance(final_task)
        else:
            row.status = _status_name(result.status)
            tracker.wanted[result.message_id] = row
    if tracker.remaining <= 0:
        tracker.done.set()


async def _follow(call: Any, tracker: _Tracker, progress: Progress, final_task: TaskID) -> None:
    # read(), not async-for: the first item was already read that way, and a
    # call takes only one of the two styles.
    while True:
        item = await call.read()
        if item is grpc.aio.EOF:
            return
        if item.WhichOneof("item") != "notification":
            continue
        for change in item.notification.body.changes:
            e = change.event
            if tracker.update(e.message_id, e.status):
                progress.advance(final_task)


async def _wait_final(
    stub: Any,
    md: list[tuple[str, str]],
    args: argparse.Namespace,
    tracker: _Tracker,
    progress: Progress,
    final_task: TaskID,
) -> None:
    """Wait for every row's final status, asking the server when the stream is quiet.

    Messages that were final before this run (a resumed run is answered with
    messages sent earlier) never appear on the stream.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + args.wait_timeout
    while tracker.remaining > 0 and (left := end - loop.time()) > 0:
        heard = len(tracker.seen)
        try:
            async with asyncio.timeout(min(QUIET_S, left)):
                await tracker.done.wait()
        except TimeoutError:
            if len(tracker.seen) == heard:
                await _settle_rest(stub, md, args.timeout, tracker, progress, final_task)
    if tracker.remaining > 0:
        await _settle_rest(stub, md, args.timeout, tracker, progress, final_task)


async def _settle_rest(
    stub: Any,
    md: list[tuple[str, str]],
    deadline: float,
    tracker: _Tracker,
    progress: Progress,
    final_task: TaskID,
) -> None:
    """Ask for the statuses the stream did not tell us."""
    pending = [row for row in tracker.wanted.values() if row.status not in TERMINAL]

    async def settle(row: Row) -> None:
        reply = await stub.GetMessage(
            messaging_service_pb2.GetMessageRequest(message_id=row.message_id),
            metadata=md,
            timeout=deadline,
        )
        status = _status_name(reply.message.status)
        if tracker.update(row.message_id, status):
            progress.advance(final_task)
        elif status not in TERMINAL:
            row.status = status

    for start in range(0, len(pending), 50):
        await asyncio.gather(*(settle(row) for row in pending[start : start + 50]))


def write_results(path: Path, rows: Sequence[Row]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(RESULT_COLUMNS)
        for r in rows:
            writer.writerow(
                (
                    r.number,
                    r.correlation_id,
                    r.destination,
                    r.message_id,
                    r.status,
                    r.error_code,
                    r.field,
                    r.error,
                )
            )


def _summary(rows: Sequence[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status or "UNKNOWN"] = counts.get(r.status or "UNKNOWN", 0) + 1
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{len(rows)} rows: {parts}"


# -- tail ------------------------------------------------------------------------------


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


# -- sessions --------------------------------------------------------------------------


def _session_row(s: Any) -> list[str]:
    state = session_service_pb2.SessionState.Name(s.state).removeprefix("SESSION_STATE_")
    return [s.id, s.contact_id, s.channel_id, state, s.queue, s.agent]


async def _sessions_list(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    request = session_service_pb2.ListSessionsRequest(
        page_size=args.page_size, contact_id=args.contact, queue=args.queue
    )
    if args.state:
        name = "SESSION_STATE_" + args.state.upper().removeprefix("SESSION_STATE_")
        try:
            request.state = session_service_pb2.SessionState.Value(name)
        except ValueError as exc:
            raise CliError(f"--state: unknown state {args.state!r}") from exc
    reply = await stub.ListSessions(request, metadata=metadata_of(args), timeout=args.timeout)
    if args.json:
        _print_json(to_json(reply))
        return 0
    table = Table("id", "contact", "channel", "state", "queue", "agent")
    for s in reply.results:
        table.add_row(*_session_row(s))
    Console().print(table)
    if reply.next_page_token:
        print(f"next page: {reply.next_page_token}")
    return 0


async def _sessions_end(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    """close or resolve: the same call shape, a different end state."""
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    options = {"metadata": metadata_of(args), "timeout": args.timeout}
    if args.end == "close":
        reply = await stub.CloseSession(
            session_service_pb2.CloseSessionRequest(session_id=args.session_id), **options
        )
    else:
        reply = await stub.ResolveSession(
            session_service_pb2.ResolveSessionRequest(session_id=args.session_id), **options
        )
    print(" ".join(_session_row(reply.session)), flush=True)
    return 0


async def _sessions_route(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    stub = session_service_pb2_grpc.SessionServiceStub(channel)
    reply = await stub.RouteSession(
        session_service_pb2.RouteSessionRequest(
            session_id=args.session_id,
            queue=args.queue,
            agent=args.agent,
            team=args.team,
            skills=args.skill,
        ),
        metadata=metadata_of(args),
        timeout=args.timeout,
    )
    print(" ".join(_session_row(reply.session)), flush=True)
    return 0


# -- templates and channels --------------------------------------------------------------


async def _templates_list(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    stub = config_service_pb2_grpc.ConfigServiceStub(channel)
    request = config_service_pb2.ListTemplatesRequest(channel_id=args.channel_id)
    if args.status:
        request.channel_status = _approval(args.status, "--status")
    templates: list[Any] = []
    while True:
        reply = await stub.ListTemplates(request, metadata=metadata_of(args), timeout=args.timeout)
        templates.extend(reply.results)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    if args.json:
        _print_json([to_json(t) for t in templates])
        return 0
    table = Table("id", "code", "lang", "category", "approvals", "body")
    for t in templates:
        approvals = ", ".join(f"{a.channel_id}={_approval_name(a.status)}" for a in t.approved)
        table.add_row(t.id, t.code, t.lang, t.category, approvals, t.body)
    Console().print(table)
    return 0


def _approval(text: str, flag: str) -> config_service_pb2.TemplateApprovalStatus.ValueType:
    name = "TEMPLATE_APPROVAL_STATUS_" + text.upper().removeprefix("TEMPLATE_APPROVAL_STATUS_")
    try:
        return config_service_pb2.TemplateApprovalStatus.Value(name)
    except ValueError as exc:
        raise CliError(f"{flag}: use APPROVED, PENDING or REJECTED, not {text!r}") from exc


def _approval_name(value: int) -> str:
    name = config_service_pb2.TemplateApprovalStatus.Name(value)  # type: ignore[arg-type]
    return str(name).removeprefix("TEMPLATE_APPROVAL_STATUS_")


async def _templates_create(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    template = config_service_pb2.Template(
        code=args.code,
        lang=args.lang,
        body=args.body,
        category=args.category,
        header=args.header,
        footer=args.footer,
    )
    for item in args.approve:
        channel_id, _, status = item.partition("=")
        template.approved.add(
            channel_id=channel_id, status=_approval(status or "APPROVED", "--approve")
        )
    stub = config_service_pb2_grpc.ConfigServiceStub(channel)
    reply = await stub.CreateTemplate(
        config_service_pb2.CreateTemplateRequest(template=template),
        metadata=metadata_of(args),
        timeout=args.timeout,
    )
    print(f"{reply.template.id} {reply.template.code} {reply.template.lang}", flush=True)
    return 0


async def _channels_list(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    stub = config_service_pb2_grpc.ConfigServiceStub(channel)
    reply = await stub.ListChannels(
        config_service_pb2.ListChannelsRequest(sandbox=args.sandbox),
        metadata=metadata_of(args),
        timeout=args.timeout,
    )
    if args.json:
        _print_json(to_json(reply))
        return 0
    table = Table("id", "type", "provider", "lane", "name", "tps")
    for c in reply.results:
        table.add_row(c.channel_id, c.contact_type, c.provider, c.lane, c.name, str(c.tps))
    Console().print(table)
    return 0
