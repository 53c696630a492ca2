"""A loopback TCP proxy that can lose the network on purpose.

It relays bytes between clients and one upstream server (PostgreSQL in the
tests). `cut()` drops every connection and refuses new ones until `mend()`;
`drop_reply_to_commit(marker)` lets through the next COMMIT of a connection
that sent `marker` in its transaction, then drops that connection before the
server's answer reaches the client: the commit happened, the client cannot
know.
"""

from __future__ import annotations

import asyncio
import contextlib


class FlakyProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut = False
        self._marker: bytes | None = None
        self.port = 0
        self.commits_dropped = 0

    async def start(self) -> FlakyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def cut(self) -> None:
        """Connections drop and new ones are closed at once, as a dead server's would."""
        self._cut = True
        self._drop_all()

    def mend(self) -> None:
        self._cut = False

    def drop_reply_to_commit(self, marker: bytes) -> None:
        self._marker = marker

    def _drop_all(self) -> None:
        for client, upstream in list(self._pairs):
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        state = {"seen": False, "dropping": False}
        for coro in (
            self._client_to_server(reader, up_writer, writer, state),
            self._server_to_client(up_reader, writer, state),
        ):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _client_to_server(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        state: dict[str, bool],
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                marker = self._marker
                if marker is not None and marker in data:
                    state["seen"] = True
                if state["seen"] and b"COMMIT" in data and self._marker is not None:
                    self._marker = None
                    self.commits_dropped += 1
                    # The client is gone before the server answers; the server
                    # still reads and applies the COMMIT.
                    state["dropping"] = True
                    client.transport.abort()
                    upstream.write(data)
                    await upstream.drain()
                    await asyncio.sleep(0.5)
                    upstream.transport.abort()
                    return
                upstream.write(data)
                await upstream.drain()
        upstream.transport.abort()

    async def _server_to_client(
        self,
        reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        state: dict[str, bool],
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if state["dropping"]:
                    continue
                client.write(data)
                await client.drain()
        client.transport.abort()
