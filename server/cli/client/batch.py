"""`cimhub send --batch`: every row of a CSV file through SendBatch, in chunks.

Rows the server refuses by name are marked and the rest of their chunk sent
again; each chunk carries an idempotency key made from its rows, so a resumed
or repeated run is answered with the messages already accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from cim.v1 import (
    messaging_service_pb2,
    messaging_service_pb2_grpc,
    notification_service_pb2,
    notification_service_pb2_grpc,
)
from server.cli.client.batch_files import Row, read_results, read_rows, summary, write_results
from server.cli.client.batch_tracking import Tracker, follow, wait_final
from server.cli.client.connection import CliError, metadata_of, status_name
from server.domain.status import TERMINAL, DeliveryStatus
from server.gateway.envelope import error_from_status

CHUNK = 1000  # the most destinations one SendBatch takes
BATCH_KINDS = ("sms", "email", "rcs", "whatsapp")
# A refused row's field as the server names it in a batch request: to[i].<path>.
_ROW_FIELD = re.compile(r"^to\[(\d+)\](?:\.(.*))?$")


def pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"{flag} takes NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def batch_request(args: argparse.Namespace) -> messaging_service_pb2.SendBatchRequest:
    request = messaging_service_pb2.SendBatchRequest(
        channel=args.channel.lower(),
        from_address=args.from_address,
        substitutions=pairs(args.var, "--var"),
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


def destination(kind: str, address: str) -> dict[str, list[str]]:
    return {"email": [address]} if kind == "email" else {"msisdn": [address]}


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


async def send_batch(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    if args.channel.lower() not in BATCH_KINDS:
        raise CliError("--batch needs --channel sms, email, rcs or whatsapp")
    if not (args.text or args.template):
        raise CliError("give --text or --template")
    if args.resume is not None and args.batch is None:
        raise CliError("--resume needs --batch with the file the results are of")
    rows = read_rows(args.batch)
    md = metadata_of(args)
    stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
    template = batch_request(args)
    tracker = Tracker()
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
            reader = asyncio.create_task(follow(events, tracker, progress, final))
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
                await wait_final(stub, md, args, tracker, progress, final)
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
    print(summary(rows), flush=True)
    # Waiting, exit 3 when any row did not end delivered; without waiting, when
    # any row was refused.
    S = DeliveryStatus
    ok = (
        (S.DELIVERED, S.READ, S.CLICKED)
        if wait
        else (S.ACCEPTED, S.SCHEDULED, S.SUBMITTED, *TERMINAL)
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
                **destination(request.channel, row.destination),
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
    tracker: Tracker,
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
            row.status = status_name(result.status)
            tracker.wanted[result.message_id] = row
    if tracker.remaining <= 0:
        tracker.done.set()
