"""A loopback listener that counts connections and keeps what each one sent, and a
resolver that answers from a table, so a test can point any name anywhere."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult


@dataclass
class Listener:
    port: int
    connections: int = 0
    received: list[bytes] = field(default_factory=list)

    def saw(self, text: str) -> bool:
        return any(text.encode() in data for data in self.received)


@asynccontextmanager
async def recording_listener() -> AsyncIterator[Listener]:
    """Listens on 127.0.0.1 and ::1 on one port; answers nothing, records everything."""
    sock4 = socket.socket(socket.AF_INET)
    sock4.bind(("127.0.0.1", 0))
    listener = Listener(sock4.getsockname()[1])

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.connections += 1
        with suppress(TimeoutError, OSError):
            listener.received.append(await asyncio.wait_for(reader.read(65536), 0.5))
        writer.close()

    servers = [await asyncio.start_server(on_connect, sock=sock4)]
    with suppress(OSError):  # a host without IPv6 loopback
        servers.append(await asyncio.start_server(on_connect, "::1", listener.port))
    try:
        yield listener
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


class MapResolver(AbstractResolver):
    """Resolves names from a table, as DNS would; a rebinding DNS is one such table."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        return None
