"""An in-memory :class:`bastion.protocol.types.Exchange` for gateway unit tests.

It keeps to the interface's contract as strictly as the real protocol should: header
names lower-cased, CR/LF/NUL in a response head rejected, a second response head
rejected, body bytes beyond a declared Content-Length rejected, writes after the end
refused. The test drives the client side: feed body chunks, end the body, pause and
resume writing, disconnect. Everything the handler sent is kept for assertions.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote

from bastion.protocol.fields import as_bytes, check_header_name, check_header_value
from bastion.protocol.head import RequestHead
from bastion.protocol.types import ClientDisconnected, InvalidResponse

T = TypeVar("T")


class FakeExchange:
    """One request and the response a handler gives to it.

    ``body`` given as bytes or a list of chunks means the whole body has already
    arrived; pass ``streaming=True`` to feed it later with :meth:`feed` and :meth:`end`.
    """

    def __init__(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Iterable[tuple[bytes | str, bytes | str]] = (),
        body: bytes | list[bytes] | None = None,
        *,
        streaming: bool = False,
        client: tuple[str, int] | None = ("127.0.0.1", 50123),
        server: tuple[str, int | None] | None = ("127.0.0.1", 8000),
        scheme: str = "http",
        http_version: str = "1.1",
        keep_alive: bool = True,
    ) -> None:
        path, _, query = target.partition("?")
        self.head = RequestHead(
            method,
            path.encode("latin-1"),
            query.encode("latin-1"),
            http_version,
            [(_b(n).lower(), _b(v)) for n, v in headers],
            client,
            server,
            scheme,
            unquote(path, errors="surrogateescape"),
        )
        self.keep_alive = keep_alive
        self.can_upgrade = False
        #: the trailers given to finish()
        self.sent_trailers: list[tuple[bytes, bytes]] | None = None
        self.informational: list[tuple[int, list[tuple[bytes, bytes]]]] = []

        chunks = [body] if isinstance(body, bytes) else list(body or [])
        self._chunks: deque[bytes] = deque(c for c in chunks if c)
        self._body_complete = not streaming
        self._disconnected = False
        self._body_waiter: asyncio.Future[None] | None = None
        self._disconnect_waiters: list[asyncio.Future[None]] = []
        self._complete_callback: Callable[[], None] | None = None
        self.receive_calls = 0

        # response side
        self.status: int | None = None
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.writes: list[bytes] = []  # every non-empty write()/finish() payload, in order
        self.head_sent = False  # a write/finish/sendfile put the head on the wire
        self.finished = False
        self.failed = False
        self.fail_exc: BaseException | None = None
        self.failed_after_finish = False  # fail() after finish() drops a good connection
        self.aborted = False  # the connection was dropped after the response started
        self.dropped_writes = 0  # writes that arrived after the client left
        self.sendfile_calls: list[tuple[int, int, int]] = []
        self._declared_length: int | None = None
        self._paused = False
        self._pause_after: int | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._done = asyncio.Event()

    # -- request body ----------------------------------------------------------------
    @property
    def body_complete(self) -> bool:
        return self._body_complete

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    @property
    def request_trailers(self) -> list[tuple[bytes, bytes]]:
        return []

    @property
    def forwarded_by(self) -> str | None:
        return None

    async def receive_body(self) -> tuple[bytes, bool]:
        self.receive_calls += 1
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                return chunk, bool(self._chunks) or not self._body_complete
            if self._body_complete:
                return b"", False
            if self._disconnected:
                raise ClientDisconnected()
            self._body_waiter = asyncio.get_running_loop().create_future()
            await self._body_waiter

    def take_buffered_body(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def call_when_complete(self, callback: Callable[[], None]) -> None:
        if self._body_complete or self._disconnected:
            callback()
        else:
            self._complete_callback = callback

    async def wait_disconnected(self) -> None:
        if self._disconnected:
            return
        fut = asyncio.get_running_loop().create_future()
        self._disconnect_waiters.append(fut)
        await fut

    # -- the client's side (called by tests) -------------------------------------------
    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
        self._wake_body()

    def end(self) -> None:
        self._body_complete = True
        self._wake_body()
        self._run_complete_callback()

    def disconnect(self) -> None:
        self._disconnected = True
        self._wake_body()
        for fut in self._disconnect_waiters + self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._disconnect_waiters.clear()
        self._drain_waiters.clear()
        self._run_complete_callback()
        if not self.finished:
            self._done.set()

    def pause_writing(self) -> None:
        self._paused = True

    def pause_after(self, nbytes: int) -> None:
        """Pause writing once ``nbytes`` of body have been written."""
        self._pause_after = nbytes

    def resume_writing(self) -> None:
        self._paused = False
        self._pause_after = None
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()

    def _wake_body(self) -> None:
        if self._body_waiter is not None and not self._body_waiter.done():
            self._body_waiter.set_result(None)

    def _run_complete_callback(self) -> None:
        cb, self._complete_callback = self._complete_callback, None
        if cb is not None:
            cb()

    # -- response ----------------------------------------------------------------------
    @property
    def response_started(self) -> bool:
        return self.status is not None

    def inform(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.status is not None:
            raise InvalidResponse("informational response after the final response began")
        if type(status) is not int or not 100 <= status <= 199 or status == 101:
            raise InvalidResponse(f"invalid informational status {status!r}")
        self.informational.append((status, _checked(headers)))

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.status is not None or self.failed:
            raise InvalidResponse("response already started")
        if type(status) is not int or not 200 <= status <= 999:
            raise InvalidResponse(f"invalid status {status!r}")
        checked = _checked(headers)
        for name, value in checked:
            if name == b"content-length":
                if not value.strip().isdigit():
                    raise InvalidResponse(f"invalid content-length {value!r}")
                self._declared_length = int(value)
        self.status = status
        self.response_headers = checked

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._write(data)

    def finish(
        self,
        data: bytes | bytearray | memoryview = b"",
        trailers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self._write(data)
        if self._disconnected:
            return
        self.sent_trailers = trailers
        self.finished = True
        self._done.set()

    def take_over(self, status: int, headers: list[tuple[bytes, bytes]], session: Any) -> Any:
        raise InvalidResponse("this request cannot switch protocols")

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        data = as_bytes(data)  # the same rule, and the same words, as the real exchange
        if self.status is None:
            raise RuntimeError("body written before start_response")
        if self.finished or self.failed:
            raise RuntimeError("body written after the response ended")
        if self._disconnected:
            self.dropped_writes += 1
            return
        self.head_sent = True
        if not data:
            return
        if self._declared_length is not None and (
            len(self.body) + len(data) > self._declared_length
        ):
            raise InvalidResponse("more body than the declared Content-Length")
        self.writes.append(bytes(data))
        self.body += data
        if self._pause_after is not None and len(self.body) >= self._pause_after:
            self._paused = True

    @property
    def writing_paused(self) -> bool:
        return self._paused and not self._disconnected

    async def drain(self) -> None:
        if not self.writing_paused:
            return
        fut = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(fut)
        await fut

    def fail(self, exc: BaseException | None = None, status: int = 500) -> None:
        if self.failed:
            return
        if self.finished:
            self.failed_after_finish = True
            return
        self.failed = True
        self.fail_exc = exc
        if self._disconnected:
            pass  # nobody to answer
        elif not self.head_sent:  # nothing on the wire yet: the 500 can still go out
            self.status = status
            self.response_headers = []
            self.body = bytearray(b"Internal Server Error" if status == 500 else b"Bad Gateway")
        else:
            self.aborted = True
        self._done.set()

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        self.sendfile_calls.append((fd, offset, count))
        sent = 0
        while sent < count:
            block = os.pread(fd, min(65536, count - sent), offset + sent)
            if not block:
                break
            self._write(block)
            sent += len(block)
            if self.writing_paused:
                await self.drain()

    # -- assertions helpers ------------------------------------------------------------
    async def wait_done(self, timeout: float = 5.0) -> None:
        """Wait until the response is finished, failed, or the client left."""
        await asyncio.wait_for(self._done.wait(), timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def header(self, name: str) -> str | None:
        key = name.lower().encode("latin-1")
        values = [v.decode("latin-1") for n, v in self.response_headers if n == key]
        return ", ".join(values) if values else None


def _checked(headers: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    """Header pairs checked by the rule the real exchange uses, names lower-cased."""
    out: list[tuple[bytes, bytes]] = []
    for item in headers:
        name, value = item
        lname = check_header_name(name)
        check_header_value(name, value)
        out.append((lname, value))
    return out


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    """Run ``coro`` on a fresh uvloop event loop (the loop bastion's workers use)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(asyncio.wait_for(coro, timeout))
