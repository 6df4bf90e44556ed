"""A fake transport and helpers to drive ``HTTP1Protocol`` without sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings
from bastion.protocol.state import ConnectionTracker


class FakeTransport:
    """Records what the protocol writes; lets tests pause writing and close."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.aborted = False
        self.reading_paused = False
        self.eof_written = False
        self.protocol: HTTP1Protocol | None = None

    def write(self, data: bytes) -> None:
        if self.closed:
            raise AssertionError("write after close")
        self.data += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    @property
    def done(self) -> bool:
        """The server will send nothing more: closed, or half-closed after an error."""
        return self.closed or self.eof_written

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


Handler = Callable[[H1Exchange], None]


def make_conn(
    handler: Handler, **settings: Any
) -> tuple[HTTP1Protocol, FakeTransport, ConnectionTracker]:
    tracker = ConnectionTracker()
    proto = HTTP1Protocol(ProtocolSettings(**settings), handler, tracker)  # type: ignore[arg-type]
    transport = FakeTransport()
    transport.protocol = proto
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport, tracker


def hello_handler(ex: H1Exchange) -> None:
    """Answers at once with a fixed body naming the method and path."""
    body = f"{ex.head.method} {ex.head.path}".encode()
    ex.start_response(200, [(b"content-type", b"text/plain")])
    ex.finish(body)


def answer_when(release: asyncio.Event, ex: H1Exchange) -> None:
    """Answers ``ex`` as :func:`hello_handler` does, once ``release`` is set."""

    async def held() -> None:
        await release.wait()
        hello_handler(ex)

    asyncio.get_running_loop().create_task(held())


def echo_handler(ex: H1Exchange) -> None:
    """Reads the whole body with receive_body, then answers with it."""

    async def run() -> None:
        chunks = []
        while True:
            data, more = await ex.receive_body()
            chunks.append(data)
            if not more:
                break
        ex.start_response(200, [(b"content-type", b"application/octet-stream")])
        ex.finish(b"".join(chunks))

    asyncio.get_running_loop().create_task(run())


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split raw bytes into (status, headers, body) for Content-Length/chunked responses."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete response: {data!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if status == 100:
            data = rest
            continue
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    rest = rest[2:]
                    break
                body += rest[:size]
                rest = rest[size + 2 :]
            data = rest
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out


async def settle() -> None:
    """Let scheduled callbacks and tasks run."""
    for _ in range(5):
        await asyncio.sleep(0)


def byteranges(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """The parts of a ``multipart/byteranges`` body: (Content-Range, Content-Type, bytes),
    checking the framing on the way (no preamble, the closing delimiter last)."""
    prefix = "multipart/byteranges; boundary="
    assert content_type.startswith(prefix), content_type
    dash = b"--" + content_type.removeprefix(prefix).encode("latin-1")
    tail = b"\r\n" + dash + b"--\r\n"
    assert body.endswith(tail), body[-80:]
    chunks = (b"\r\n" + body.removesuffix(tail)).split(b"\r\n" + dash + b"\r\n")
    assert chunks[0] == b"", chunks[0][:80]
    parts = []
    for chunk in chunks[1:]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        assert sep, chunk[:80]
        lines = [line.partition(":") for line in head.decode("latin-1").split("\r\n")]
        headers = {k.strip().lower(): v.strip() for k, _, v in lines}
        parts.append((headers["content-range"], headers["content-type"], data))
    return parts
