"""`cimhub templates`: list or create message templates."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from cim.v1 import config_service_pb2, config_service_pb2_grpc
from server.cli.client.connection import CliError, connection_flags, metadata_of, print_json, run
from server.gateway.jsonmap import to_json


def register(subparsers: Any) -> None:
    templates = subparsers.add_parser("templates", help="list or create message templates")
    sub = templates.add_subparsers(dest="templates_command", required=True)
    listing = sub.add_parser("list", help="list templates")
    listing.add_argument("--channel-id", default="", help="only templates known on this channel")
    listing.add_argument("--status", default="", help="with --channel-id: APPROVED, PENDING...")
    listing.add_argument("--json", action="store_true")
    connection_flags(listing)
    listing.set_defaults(handler=run(_templates_list))
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
    connection_flags(create)
    create.set_defaults(handler=run(_templates_create))


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
        print_json([to_json(t) for t in templates])
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
