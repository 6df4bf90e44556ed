"""One HTTP/1.x request and its response: the exchange a handler works with.

Built by :class:`bastion.protocol.http1.HTTP1Protocol` when a request head has been
parsed. It buffers the request body for the handler (with backpressure), frames the
response (Content-Length, chunked, or close-delimited), and refuses header values that
would corrupt the wire.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from bastion.protocol.errors import error_response, status_line
from bastion.protocol.types import ClientDisconnected, InvalidResponse

if TYPE_CHECKING:
    from bastion.protocol.http1 import HTTP1Protocol

log = logging.getLogger("bastion.error")

# Pause reading when this much request body is buffered and the handler is not reading.
BODY_HIGH_WATER = 256 * 1024

# Characters that may never appear in a header value we put on the wire.
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(rb"[0-9]+")

_NO_BODY_STATUS = frozenset({204, 304})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Header names we validated and lower-cased before; bounded so hostile apps cannot grow it.
_name_cache: dict[bytes, bytes] = {}


def _lower_name(name: bytes) -> bytes:
    lname = _name_cache.get(name)
    if lname is None:
        if not isinstance(name, bytes) or not _TOKEN.fullmatch(name):
            raise InvalidResponse(f"invalid header name {name!r}")
        lname = name.lower()
        if len(_name_cache) < 512:
            _name_cache[name] = lname
    return lname


class H1Exchange:
    """One HTTP/1.x request and its response (implements ``protocol.types.Exchange``)."""

    __slots__ = (
        "_body",
        "_body_done",
        "_body_size",
        "_body_waiter",
        "_chunked",
        "_close_after",
        "_complete_cb",
        "_content_length",
        "_disc_waiters",
        "_disconnected",
        "_expect_continue",
        "_finished",
        "_head",
        "_no_body",
        "_proto",
        "_received",
        "_sent",
        "_start",
        "_started",
        "_status",
        "_streaming",
        "_wrote",
        "client",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "raw_path",
        "scheme",
        "server",
    )

    def __init__(
        self,
        proto: HTTP1Protocol,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        body_expected: bool,
        expect_continue: bool,
    ) -> None:
        self._proto = proto
        self.method = method
        self.raw_path = raw_path
        if b"%" in raw_path:
            self.path = unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape")
        else:
            self.path = raw_path.decode("utf-8", "surrogateescape")
        self.query_string = query_string
        self.http_version = http_version
        self.headers = headers
        self.client = proto.client
        self.server = proto.server
        self.scheme = "http"
        self.keep_alive = keep_alive
        self._body: list[bytes] = []
        self._body_size = 0
        self._received = 0
        self._body_done = not body_expected
        self._body_waiter: asyncio.Future[None] | None = None
        self._streaming = False
        self._complete_cb: Callable[[], None] | None = None
        self._expect_continue = expect_continue
        self._disconnected = False
        self._disc_waiters: list[asyncio.Future[None]] | None = None
        self._started = False
        self._finished = False
        self._wrote = False
        self._head: list[bytes] | None = None
        self._status = 0
        self._content_length = -1
        self._chunked = False
        self._no_body = method == "HEAD"
        self._close_after = False
        self._sent = 0
        self._start = proto.loop.time() if proto.settings.access_log is not None else 0.0

    # -- request body ------------------------------------------------------------------
    @property
    def body_complete(self) -> bool:
        return self._body_done

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    def _feed(self, data: bytes) -> None:
        self._body.append(data)
        self._body_size += len(data)
        waiter = self._body_waiter
        if waiter is not None:
            self._body_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self._streaming and self._body_size > BODY_HIGH_WATER:
            self._proto._pause_reading(self)

    def _complete(self) -> None:
        self._body_done = True
        waiter = self._body_waiter
        if waiter is not None:
            self._body_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _lost(self) -> None:
        """The connection went away."""
        if self._disconnected:
            return
        self._disconnected = True
        waiter = self._body_waiter
        if waiter is not None:
            self._body_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._disc_waiters:
            for fut in self._disc_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._disc_waiters = None
        cb = self._complete_cb
        if cb is not None:
            self._complete_cb = None
            cb()

    def _send_continue(self) -> None:
        if self._expect_continue:
            self._expect_continue = False
            if not self._started and not self._disconnected:
                self._proto.transport_write(_CONTINUE)

    async def receive_body(self) -> tuple[bytes, bool]:
        self._streaming = True
        while True:
            if self._body:
                data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self._body_size = 0
                self._proto._resume_reading(self)
                return data, not self._body_done
            if self._body_done:
                return b"", False
            if self._disconnected:
                raise ClientDisconnected()
            self._send_continue()
            self._proto._resume_reading(self)
            waiter = self._proto.loop.create_future()
            self._body_waiter = waiter
            await waiter

    def take_buffered_body(self) -> bytes:
        data = b"".join(self._body)
        self._body.clear()
        self._body_size = 0
        return data

    def call_when_complete(self, callback: Callable[[], None]) -> None:
        if self._body_done or self._disconnected:
            callback()
            return
        self._complete_cb = callback
        self._send_continue()
        self._proto._resume_reading(self)

    async def wait_disconnected(self) -> None:
        if self._disconnected:
            return
        fut = self._proto.loop.create_future()
        if self._disc_waiters is None:
            self._disc_waiters = [fut]
        else:
            self._disc_waiters.append(fut)
        await fut

    # -- response ----------------------------------------------------------------------
    @property
    def response_started(self) -> bool:
        return self._started

    @property
    def writing_paused(self) -> bool:
        return self._proto.write_paused

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self._started:
            raise InvalidResponse("response already started")
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise InvalidResponse(f"invalid status {status!r}")
        if status < 200:
            raise InvalidResponse(f"informational status {status} cannot be a final response")
        proto = self._proto
        head = [status_line(status)]
        content_length = -1
        add_date = True
        add_server = bool(proto.settings.server_header)
        for name, value in headers:
            lname = _lower_name(name)
            if not isinstance(value, bytes) or _BAD_VALUE.search(value) is not None:
                raise InvalidResponse(f"invalid value for header {name!r}: {value!r}")
            if lname == b"content-length":
                if not _DIGITS.fullmatch(value.strip()):
                    raise InvalidResponse(f"invalid content-length {value!r}")
                if content_length != -1:
                    raise InvalidResponse("content-length given twice")
                content_length = int(value)
                continue
            if lname == b"transfer-encoding":
                # framing is ours to choose
                continue
            if lname == b"connection":
                if b"close" in value.lower():
                    self._close_after = True
                continue
            if lname == b"date":
                add_date = False
            elif lname == b"server":
                add_server = False
            head.append(name + b": " + value + b"\r\n")
        if add_date:
            head.append(proto.tracker.date_header)
        if add_server:
            head.append(proto.settings.server_header)
        self._started = True
        self._status = status
        self._content_length = content_length
        if status in _NO_BODY_STATUS:
            self._no_body = True
            if status == 204:
                self._content_length = -1
        self._head = head
        # an unread request body cannot be skipped reliably once we answer early
        if not self._body_done:
            self._expect_continue = False

    def _emit_head(self, finishing_with: int) -> bytes:
        """Finish the head; ``finishing_with`` is the whole body length or -1 if unknown."""
        head = self._head
        if head is None:
            raise InvalidResponse("response not started")
        self._head = None
        cl = self._content_length
        if cl >= 0:
            head.append(b"content-length: %d\r\n" % cl)
        elif self._status == 204 or (self._status == 304):
            pass
        elif finishing_with >= 0:
            self._content_length = finishing_with
            head.append(b"content-length: %d\r\n" % finishing_with)
        elif self.http_version == "1.1":
            self._chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
        else:
            self._close_after = True  # HTTP/1.0: the end of the body is the end of the connection
        if not self.keep_alive or self._close_after or not self._body_done:
            self._close_after = True
            head.append(b"connection: close\r\n\r\n")
        elif self.http_version == "1.0":
            head.append(b"connection: keep-alive\r\n\r\n")
        else:
            head.append(b"\r\n")
        return b"".join(head)

    def write(self, data: bytes) -> None:
        if self._finished:
            raise InvalidResponse("response already finished")
        if self._disconnected:
            return
        proto = self._proto
        if not self._wrote:
            self._wrote = True
            head = self._emit_head(-1)
            if self._no_body or not data:
                proto.transport_write(head)
                return
            proto.transport_write(head + self._frame(data))
            return
        if self._no_body or not data:
            return
        proto.transport_write(self._frame(data))

    def _frame(self, data: bytes) -> bytes:
        n = len(data)
        self._sent += n
        if self._chunked:
            return b"%x\r\n%b\r\n" % (n, data)
        cl = self._content_length
        if cl >= 0 and self._sent > cl:
            self._close_after = True
            raise InvalidResponse(f"response body longer than its content-length {cl}")
        return data

    def finish(self, data: bytes = b"") -> None:
        if self._finished:
            return
        if self._disconnected:
            self._finished = True
            self._proto._exchange_done(self)
            return
        proto = self._proto
        if not self._wrote:
            self._wrote = True
            head = self._emit_head(len(data))
            out = head if self._no_body or not data else head + self._frame(data)
        elif self._no_body:
            out = b""
        elif self._chunked:
            out = (self._frame(data) + b"0\r\n\r\n") if data else b"0\r\n\r\n"
        else:
            out = self._frame(data) if data else b""
        if (
            not self._no_body
            and self._content_length >= 0
            and self._sent != self._content_length
            and self.method != "HEAD"
        ):
            self._close_after = True  # short body: the client must not reuse the framing
        self._finished = True
        if out:
            proto.transport_write(out)
        proto._exchange_done(self)

    async def drain(self) -> None:
        await self._proto.drain()

    def fail(self, exc: BaseException | None = None) -> None:
        if self._finished:
            return
        if exc is not None and not isinstance(exc, ClientDisconnected):
            log.error(
                "error while answering %s %s",
                self.method,
                self.raw_path.decode("latin-1"),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        proto = self._proto
        self._finished = True
        self._close_after = True
        if self._disconnected:
            proto._exchange_done(self)
            return
        if not self._started or (self._head is not None and not self._wrote):
            self._started = True
            self._wrote = True
            self._status = 500
            proto.transport_write(error_response(500, proto.tracker.date_header))
        proto._exchange_done(self)

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        from bastion.protocol.sendfile import send_file

        if self._no_body or self._disconnected:
            return
        if not self._wrote:
            self._wrote = True
            self._proto.transport_write(self._emit_head(-1))
        if self._chunked or self._content_length < 0:
            # no zero-copy inside chunked framing: read and write blocks
            await send_file(self._proto, fd, offset, count, self._frame, zero_copy=False)
            return
        self._sent += count
        await send_file(self._proto, fd, offset, count, None, zero_copy=True)
