"""Small HTTP/1.1 servers on raw asyncio sockets, run in a thread, for the proxy tests.

A :class:`RawServer` listens on 127.0.0.1 port 0 and calls ``handler(head, body)`` for
each request it parses (just enough HTTP/1.1: a head, then a Content-Length or chunked
body); the handler returns the bytes to send back, or :data:`CLOSE` to drop the
connection without answering. ``requests`` keeps every request seen, ``connections``
counts connections accepted. Handlers may also be async (to sleep).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

CLOSE = b"<close>"


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    conn: int
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


Handler = Callable[[Request], "bytes | Awaitable[bytes]"]


def response(
    status: int = 200, body: bytes = b"ok", headers: list[tuple[str, str]] | None = None
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    hs = headers if headers is not None else []
    if not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hs):
        hs = [*hs, ("Content-Length", str(len(body)))]
    lines += [f"{n}: {v}" for n, v in hs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class RawServer:
    handler: Handler
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self._writers.add(writer)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = raw.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = []
                for line in lines[1:]:
                    if line:
                        n, _, v = line.partition(":")
                        headers.append((n.strip().lower(), v.strip()))
                req = Request(method, target, headers, b"", conn)
                length = req.header("content-length")
                if req.header("transfer-encoding") == "chunked":
                    parts = []
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        if size == 0:
                            while line := (await reader.readuntil(b"\r\n"))[:-2]:
                                n, _, v = line.decode("latin-1").partition(":")
                                req.trailers.append((n.strip().lower(), v.strip()))
                            break
                        chunk = await reader.readexactly(size + 2)
                        parts.append(chunk[:-2])
                    req.body = b"".join(parts)
                elif length:
                    req.body = await reader.readexactly(int(length))
                self.requests.append(req)
                out = self.handler(req)
                if inspect.isawaitable(out):
                    out = await out
                if out == CLOSE or out.endswith(CLOSE):
                    writer.write(out[: -len(CLOSE)])
                    await writer.drain()
                    writer.transport.abort()
                    return
                writer.write(out)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
