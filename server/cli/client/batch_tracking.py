"""Final statuses of a `cimhub send --batch` run: from the live event stream,
and from the server directly when the stream is quiet."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
from rich.progress import Progress, TaskID

from cim.v1 import messaging_service_pb2
from server.cli.client.batch_files import Row
from server.cli.client.connection import status_name
from server.domain.status import TERMINAL

# Seconds without a status from the stream before the server is asked directly.
QUIET_S = 5.0


@dataclass
class Tracker:
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


async def follow(call: Any, tracker: Tracker, progress: Progress, final_task: TaskID) -> None:
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


async def wait_final(
    stub: Any,
    md: list[tuple[str, str]],
    args: argparse.Namespace,
    tracker: Tracker,
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
    tracker: Tracker,
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
        status = status_name(reply.message.status)
        if tracker.update(row.message_id, status):
            progress.advance(final_task)
        elif status not in TERMINAL:
            row.status = status

    for start in range(0, len(pending), 50):
        await asyncio.gather(*(settle(row) for row in pending[start : start + 50]))
