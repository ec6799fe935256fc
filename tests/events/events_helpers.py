"""Helpers of the event-policy tests: a raw-message watcher, polling."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from faststream.nats import NatsBroker
from nats.aio.msg import Msg


class Watcher:
    """Raw messages seen on core NATS subjects, as they are published."""

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker
        self.messages: list[Msg] = []

    async def watch(self, subject: str) -> None:
        async def collect(msg: Msg) -> None:
            self.messages.append(msg)

        await self.broker.connection.subscribe(subject, cb=collect)
        await self.broker.connection.flush()

    def on(self, subject_prefix: str) -> list[Msg]:
        return [m for m in self.messages if m.subject.startswith(subject_prefix)]


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Relay:
    """A TCP relay to a real server that can be cut: while down it refuses every connection
    and has cut those open (a network fault between a service and, say, its S3)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.down = False
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def cut(self) -> None:
        self.down = True
        for writer in list(self._open):
            writer.transport.abort()

    def restore(self) -> None:
        self.down = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._open |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        try:
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._open -= {writer, upstream_writer}
