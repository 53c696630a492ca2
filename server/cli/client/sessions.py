"""`cimhub sessions`: list, close, resolve or route sessions."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from cim.v1 import session_service_pb2, session_service_pb2_grpc
from server.cli.client.connection import CliError, connection_flags, metadata_of, print_json, run
from server.gateway.jsonmap import to_json


def register(subparsers: Any) -> None:
    sessions = subparsers.add_parser("sessions", help="list, close, resolve or route sessions")
    sub = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sub.add_parser("list", help="list sessions")
    listing.add_argument("--contact", default="", help="only this contact's sessions")
    listing.add_argument("--state", default="", help="ACTIVE, RESOLVED or CLOSED")
    listing.add_argument("--queue", default="")
    listing.add_argument("--page-size", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    connection_flags(listing)
    listing.set_defaults(handler=run(_sessions_list))
    for name, text in (("close", "close a session"), ("resolve", "resolve a session")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("session_id")
        connection_flags(cmd)
        cmd.set_defaults(handler=run(_sessions_end), end=name)
    route = sub.add_parser("route", help="route a session to a queue, agent or team")
    route.add_argument("session_id")
    route.add_argument("--queue", default="")
    route.add_argument("--agent", default="")
    route.add_argument("--team", default="")
    route.add_argument("--skill", action="append", default=[])
    connection_flags(route)
    route.set_defaults(handler=run(_sessions_route))


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
        print_json(to_json(reply))
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
