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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from bastion.protocol.errors import error_response, reason, status_line
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

# Header names and values already checked, so the common case costs one lookup each.
# Both are bounded so a hostile app cannot grow them without limit.
_name_cache: dict[bytes, bytes] = {}
_value_cache: set[bytes] = set()

_HAS_DATE = 1
_HAS_SERVER = 2
_SPECIAL = {
    b"content-length": 4,
    b"transfer-encoding": 8,
    b"connection": 16,
    b"date": _HAS_DATE,
    b"server": _HAS_SERVER,
}

_STATUS_LINES = {s: status_line(s) for s in range(200, 600) if reason(s)}
_cl_headers: dict[int, bytes] = {}


def _check_name(name: object) -> bytes:
    if not isinstance(name, bytes) or not _TOKEN.fullmatch(name):
        raise InvalidResponse(f"invalid header name {name!r}")
    lname = name.lower()
    if len(_name_cache) < 1024:
        _name_cache[name] = lname
    return lname


def _check_value(name: object, value: object) -> None:
    if not isinstance(value, bytes) or _BAD_VALUE.search(value) is not None:
        raise InvalidResponse(f"invalid value for header {name!r}: {value!r}")
    if len(value) <= 64 and len(_value_cache) < 4096:
        _value_cache.add(value)


def _status_line_checked(status: object) -> bytes:
    if not isinstance(status, int) or not 100 <= status <= 999:
        raise InvalidResponse(f"invalid status {status!r}")
    if status < 200:
        raise InvalidResponse(f"informational status {status} cannot be a final response")
    return status_line(status)


def _content_length_header(n: int) -> bytes:
    line = _cl_headers.get(n)
    if line is None:
        line = b"content-length: %d\r\n" % n
        if n < 65536 and len(_cl_headers) < 4096:
            _cl_headers[n] = line
    return line


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

    def start_response(self, status: int, headers: Iterable[Any]) -> None:
        # ``headers`` is typed loosely on purpose: ASGI apps may send pairs as lists, and
        # each name and value is checked below whatever its type.
        if self._started:
            raise InvalidResponse("response already started")
        line = _STATUS_LINES.get(status) if status.__class__ is int else None
        if line is None:
            line = _status_line_checked(status)
        proto = self._proto
        head = [line]
        names = _name_cache
        values = _value_cache
        special = 0
        for item in headers:
            name, value = item
            lname = names.get(name)
            if lname is None:
                lname = _check_name(name)
            if value not in values:
                _check_value(name, value)
            if lname in _SPECIAL:
                if self._special_header(lname, value):
                    special |= _SPECIAL[lname]
                    continue
                special |= _SPECIAL[lname]
            head += (name, b": ", value, b"\r\n")
        if not special & _HAS_DATE:
            head.append(proto.tracker.date_header)
        if not special & _HAS_SERVER:
            server = proto.settings.server_header
            if server:
                head.append(server)
        self._started = True
        self._status = status
        if status in _NO_BODY_STATUS:
            self._no_body = True
            if status == 204:
                self._content_length = -1
        self._head = head
        # an unread request body cannot be skipped reliably once we answer early
        if not self._body_done:
            self._expect_continue = False

    def _special_header(self, lname: bytes, value: bytes) -> bool:
        """Handle a framing-related header; True if it must not be copied to the head."""
        if lname == b"content-length":
            if not _DIGITS.fullmatch(value.strip()):
                raise InvalidResponse(f"invalid content-length {value!r}")
            if self._content_length != -1:
                raise InvalidResponse("content-length given twice")
            self._content_length = int(value)
            return True
        if lname == b"transfer-encoding":
            return True  # framing is ours to choose
        if lname == b"connection":
            if b"close" in value.lower():
                self._close_after = True
            return True
        return False  # date, server: the app's own replaces ours

    def _end_head(self, head: list[bytes], whole_body: int) -> None:
        """Add framing and connection headers; ``whole_body`` is the body length or -1."""
        cl = self._content_length
        if cl >= 0:
            head.append(_content_length_header(cl))
        elif self._status == 204 or self._status == 304:
            pass
        elif whole_body >= 0:
            self._content_length = whole_body
            head.append(_content_length_header(whole_body))
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

    def _emit_head(self, whole_body: int) -> bytes:
        head = self._head
        if head is None:
            raise InvalidResponse("response not started")
        self._head = None
        self._end_head(head, whole_body)
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
        proto = self._proto
        head = self._head
        if head is not None and not self._wrote and not self._disconnected:
            # the common case: the whole response at once, in one write
            self._wrote = True
            self._head = None
            n = len(data)
            self._end_head(head, n)
            if data and not self._no_body:
                cl = self._content_length
                if n > cl:
                    self._close_after = True
                    raise InvalidResponse(f"response body longer than its content-length {cl}")
                if n < cl:
                    self._close_after = True  # short body: the framing is broken
                self._sent = n
                head.append(data)
            elif self._content_length > 0 and not self._no_body:
                self._close_after = True
            self._finished = True
            proto.transport_write(b"".join(head))
            proto._exchange_done(self)
            return
        if self._disconnected:
            self._finished = True
            proto._exchange_done(self)
            return
        if not self._wrote:
            self._wrote = True
            head_bytes = self._emit_head(len(data))
            out = head_bytes if self._no_body or not data else head_bytes + self._frame(data)
        elif self._no_body:
            out = b""
        elif self._chunked:
            out = (self._frame(data) + b"0\r\n\r\n") if data else b"0\r\n\r\n"
        else:
            out = self._frame(data) if data else b""
        if not self._no_body and self._content_length >= 0 and self._sent != self._content_length:
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
        from bastion.protocol.sendfile import cork, send_file

        if self._no_body or self._disconnected:
            return
        corked = False
        if not self._wrote:
            self._wrote = True
            head = self._emit_head(-1)
            if not self._chunked and self._content_length >= 0:
                # hold the head back so it leaves in the same packets as the file
                corked = cork(self._proto, True)
            self._proto.transport_write(head)
        if self._chunked or self._content_length < 0:
            # no zero-copy inside chunked framing: read and write blocks
            await send_file(self._proto, fd, offset, count, self._frame, zero_copy=False)
            return
        self._sent += count
        try:
            await send_file(self._proto, fd, offset, count, None, zero_copy=True)
        finally:
            if corked:
                cork(self._proto, False)
