"""`cimhub messages show ID`: a message's timeline, one line per step."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import grpc

from cim.v1 import delivery_pb2, messaging_service_pb2_grpc, timeline_pb2
from server.cli.client.connection import connection_flags, metadata_of, print_json, run
from server.gateway.jsonmap import to_json


def register(subparsers: Any) -> None:
    messages = subparsers.add_parser("messages", help="look into sent messages")
    sub = messages.add_subparsers(dest="messages_command", required=True)
    show = sub.add_parser("show", help="print a message's timeline, oldest step first")
    show.add_argument("message_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the timeline as JSON")
    connection_flags(show)
    show.set_defaults(handler=run(_show))


async def _show(args: argparse.Namespace, channel: grpc.aio.Channel) -> int:
    stub = messaging_service_pb2_grpc.MessagingServiceStub(channel)
    reply = await stub.GetMessageTimeline(
        timeline_pb2.GetMessageTimelineRequest(message_id=args.message_id),
        metadata=metadata_of(args),
        timeout=args.timeout,
    )
    if args.json:
        print_json(to_json(reply))
    else:
        print(render_timeline(reply), flush=True)
    return 0


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _status(value: delivery_pb2.DeliveryStatus.ValueType) -> str:
    return delivery_pb2.DeliveryStatus.Name(value).removeprefix("DELIVERY_STATUS_")


def _kind(value: timeline_pb2.TimelineStepKind.ValueType) -> str:
    return timeline_pb2.TimelineStepKind.Name(value).removeprefix("TIMELINE_STEP_KIND_")


def _detail(step: timeline_pb2.TimelineStep) -> str:
    kind = _kind(step.kind)
    if kind == "ACCEPTED":
        parts = [_status(step.status)]
        if step.request_id:
            parts.append(f"request {step.request_id}")
        if step.trace_id:
            parts.append(f"trace {step.trace_id}")
        return "  ".join(parts)
    if kind == "SCHEDULED":
        return f"send at {_when(step.send_time)}"
    if kind == "ATTEMPT":
        a = step.attempt
        parts = [f"#{a.number}", a.channel_id, a.provider, a.outcome]
        if a.error_code:
            parts.append(a.error_code)
        if a.reason:
            parts.append(a.reason)
        if a.provider_message_id:
            parts.append(a.provider_message_id)
        return "  ".join([*parts, f"{a.latency_ms} ms"])
    if kind == "FALLBACK":
        return f"{step.from_channel_id} -> {step.to_channel_id}"
    if kind == "WEBHOOK_ATTEMPT":
        w = step.webhook
        endpoint = timeline_pb2.WebhookEndpointKind.Name(w.endpoint).removeprefix(
            "WEBHOOK_ENDPOINT_KIND_"
        )
        answer = f"HTTP {w.http_status}" if w.http_status else (w.error or "no answer")
        return f"{w.delivery_id}  {endpoint}  {answer}  {w.url}  {w.latency_ms} ms"
    return "  ".join(p for p in (_status(step.status), step.reason) if p)


def render_timeline(reply: timeline_pb2.GetMessageTimelineResponse) -> str:
    lines = [f"message {reply.message_id}  {_status(reply.status)}"]
    lines.extend(f"{_when(s.timestamp)}  {_kind(s.kind):<15}  {_detail(s)}" for s in reply.steps)
    return "\n".join(lines)
