"""The client commands: they talk to a running hub over gRPC with the generated
stubs, like any other client, and never touch its database."""

from __future__ import annotations

from typing import Any

from server.cli.client import channels, messages, send, sessions, tail, templates


def register(subparsers: Any) -> None:
    for module in (send, tail, sessions, templates, channels, messages):
        module.register(subparsers)
