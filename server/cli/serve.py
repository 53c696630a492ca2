"""`cimhub serve`: the hub itself, gRPC and the REST facade in one process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.config import ROLES, Settings, load_channels
from server.telemetry import logs, tracing


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="serve gRPC and the REST facade (the default)")
    serve.add_argument("--host", help="address to bind (env CIMHUB_HOST)")
    serve.add_argument(
        "--grpc-port", type=int, help="gRPC port (env CIMHUB_GRPC_PORT, default 50051)"
    )
    serve.add_argument(
        "--http-port", type=int, help="REST port (env CIMHUB_HTTP_PORT, default 8080)"
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        help="serve /metrics on this port too (env CIMHUB_METRICS_PORT; 0 picks a free one)",
    )
    serve.add_argument("--database-url", help="SQLAlchemy URL (env CIMHUB_DATABASE_URL)")
    serve.add_argument(
        "--channels", type=Path, help="channels TOML file (env CIMHUB_CHANNELS_FILE)"
    )
    serve.add_argument(
        "--role",
        choices=ROLES,
        help="api: serve calls only; dispatcher: send, deliver webhooks and sweep;"
        " all: both (env CIMHUB_ROLE, default all)",
    )
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument(
        "--log-format", choices=("text", "json"), help="log lines (env CIMHUB_LOG_FORMAT, text)"
    )
    serve.set_defaults(handler=_serve_command)


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    s = Settings.from_env(env)
    if args.host:
        s = replace(s, host=args.host)
    if args.grpc_port is not None:
        s = replace(s, grpc_port=args.grpc_port)
    if args.http_port is not None:
        s = replace(s, http_port=args.http_port)
    if args.database_url:
        s = replace(s, database_url=args.database_url)
    if args.metrics_port is not None:
        s = replace(s, metrics_port=args.metrics_port)
    if args.channels:
        s = replace(s, channels=load_channels(args.channels))
    if getattr(args, "log_format", None):
        s = replace(s, log_format=args.log_format)
    if getattr(args, "role", None):
        s = replace(s, role=args.role)
    return s


def _serve_command(args: argparse.Namespace) -> int:
    settings = settings_from(args, dict(os.environ))
    logs.setup(settings.log_format, getattr(logging, str(args.log_level).upper(), logging.INFO))
    # OTLP export only when the standard OTEL_* variables ask for it.
    provider = tracing.configure(os.environ)
    try:
        asyncio.run(serve(settings))
    finally:
        provider.shutdown()
    return 0


async def serve(settings: Settings) -> None:
    # Imported here: the client commands need none of the server's parts.
    from server.app import Hub
    from server.storage.db import sqlite_file

    db_path = sqlite_file(settings.database_url)
    if db_path:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    hub = await Hub.start(settings)
    print(
        f"cimhub: gRPC on {settings.host}:{hub.grpc_port}, HTTP on {settings.host}:{hub.http_port}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("cimhub: shutting down", flush=True)
    await hub.stop()
