"""The cimhub command: the hub itself, a client of a running hub, and the
operator's tools that work on its database directly.

Each command group lives in its own module with a `register(subparsers)`
function; a registered subparser sets `handler`, a callable taking the parsed
arguments and returning the exit code. `cimhub --help` lists the commands by
group, so a user sees which ones need a running hub and which the database.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from server.cli import admin, client, db, serve

# (heading in the help, the modules registering the group's commands), in help order.
_GROUPS: tuple[tuple[str, tuple[ModuleType, ...]], ...] = (
    ("the hub", (serve,)),
    (
        "client commands, to a running hub over gRPC (--target; --api-id and --api-key, "
        "or --token)",
        (client,),
    ),
    ("admin and database commands, on the database directly (--database-url)", (admin, db)),
)


class _Group:
    """Adds a group's subcommands and remembers them for the help's listing."""

    def __init__(self, subparsers: Any, title: str) -> None:
        self._subparsers = subparsers
        self.title = title
        self.commands: list[tuple[str, str]] = []

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        # The help goes to the grouped listing, not to argparse's flat one.
        self.commands.append((name, kwargs.pop("help", "")))
        parser: argparse.ArgumentParser = self._subparsers.add_parser(name, **kwargs)
        return parser

    def listing(self, width: int) -> str:
        lines = [f"{self.title}:"]
        lines.extend(f"  {name:<{width}}  {text}".rstrip() for name, text in self.commands)
        return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cimhub",
        description="CIM Hub messaging platform",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        help="one of the commands below; 'cimhub COMMAND --help' shows its flags",
    )
    groups = []
    for title, modules in _GROUPS:
        group = _Group(sub, title)
        for module in modules:
            module.register(group)
        groups.append(group)
    width = max(len(name) for g in groups for name, _ in g.commands)
    parser.epilog = "\n\n".join(g.listing(width) for g in groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        args = _parser().parse_args(["serve", *(argv or [])])
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        _parser().print_help()
        return 2
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
