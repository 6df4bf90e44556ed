"""One HTTP/1.x request and its response: the exchange a handler works with.

Built by the HTTP/1.1 connection (:mod:`bastion.protocol.http1`) when a request head has
been parsed. It buffers the request body for the handler (with backpressure), frames the
response (Content-Length, chunked, or close-delimited), refuses header values that would
corrupt the wire, and hands the connection over to a session after a ``101``.

It talks to its connection only through :class:`H1Link`, the connection's base: its
:class:`~bastion.protocol.flow.Flow` for every byte in or out, and two calls for the end
of the response and for an upgrade.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from bastion.protocol.errors import error_response, status_line
from bastion.protocol.fields import (
    as_bytes,
    check_header_name,
    check_header_value,
    known_header_names,
    known_header_values,
)
from bastion.protocol.flow import BODY, Flow
from bastion.protocol.h1_head import (
    HAS_DATE,
    HAS_SERVER,
    SPECIAL_HEADERS,
    STATUS_LINES,
    content_length_header,
    header_lines,
    status_line_checked,
    trailer_section,
)
from bastion.protocol.head import RequestHead
from bastion.protocol.sendfile import send_file
from bastion.protocol.settings import ProtocolSettings
from bastion.protocol.state import ConnectionTracker
from bastion.protocol.types import ClientDisconnected, InvalidResponse, Session

log: Final = logging.getLogger("bastion.error")
#: the clock of request timings (a static in the compiled build: no lookup in ``time``)
_clock: Final = time.perf_counter

__all__ = ["H1Exchange", "H1Link"]

# Pause reading when this much request body is buffered and the handler is not reading.
BODY_HIGH_WATER: Final = 256 * 1024

_NO_BODY_STATUS: Final = frozenset({204, 304})
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# bodies larger than this are written after their head instead of joined to it (a copy)
_JOIN_MAX: Final = 64 * 1024

# the moments ``H1Exchange.stages`` holds (perf_counter; 0.0 for one that never came),
# kept only when the slow-request log is on (``settings.stage_times``)
STAGE_HEAD: Final = 0  # the request head arrived (the exchange began)
STAGE_DISPATCH: Final = 1  # handed to the site's handler
STAGE_FILTERED: Final = 2  # the route's request filters let it through to the handler
STAGE_BODY: Final = 3  # the whole request body arrived (stays 0.0 without a body)
STAGE_RESPONSE: Final = 4  # the response head was made
STAGES: Final = 5


class H1Link(asyncio.Protocol):
    """What an exchange sees of its connection: the connection class derives from it.

    Its flow carries every byte; :meth:`exchange_done` and :meth:`switch` are how an
    exchange tells the connection its response is over, or that a 101 went out. (A
    base class rather than an object of its own: nothing more to keep per connection,
    and native calls in the compiled build.)
    """

    __slots__ = ("flow", "settings", "tracker")

    def __init__(self, settings: ProtocolSettings, tracker: ConnectionTracker, flow: Flow) -> None:
        self.settings = settings
        self.tracker = tracker
        self.flow = flow

    def exchange_done(self, ex: H1Exchange) -> None:
        """The response has been completely handed over (or the exchange failed)."""
        raise NotImplementedError

    def switch(self, ex: H1Exchange, session: Session) -> None:
        """A 101 went out: the connection's bytes belong to ``session`` from now on."""
        raise NotImplementedError

    def peer(self) -> tuple[str, int] | None:
        """The connection's peer (the PROXY header's source when there was one), or None
        on a Unix socket."""
        raise NotImplementedError


#: the trailers of a request that had none (shared: only ever read)
_NO_TRAILERS: Final[list[tuple[bytes, bytes]]] = []


def _framing_field(pair: Any) -> bool:
    """Whether a response header pair names Content-Length or Transfer-Encoding (a
    malformed pair is left to :func:`header_lines` to refuse)."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        return False
    name = pair[0]
    if isinstance(name, str):
        name = name.encode("latin-1", "replace")
    if not isinstance(name, bytes):
        return False
    lname = name.lower()
    return lname == b"content-length" or lname == b"transfer-encoding"


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
        "_flow",
        "_head",
        "_link",
        "_no_body",
        "_peer_closed",
        "_sent",
        "_started",
        "_streaming",
        "_wrote",
        "can_upgrade",
        "head",
        "keep_alive",
        "received",
        "request_trailers",
        "stages",
        "start_time",
        "status",
    )

    def __init__(
        self,
        link: H1Link,
        head: RequestHead,
        keep_alive: bool,
        body_expected: bool,
        expect_continue: bool,
    ) -> None:
        self._link = link
        self._flow = link.flow
        self.head = head
        self.keep_alive = keep_alive
        #: the request asked to switch protocols and the connection can hand itself over
        self.can_upgrade = False
        #: request body bytes received so far
        self.received = 0
        #: the final status sent (0 until the response starts)
        self.status = 0
        self._body: list[bytes] | None = None  # made when body bytes arrive
        self._body_size = 0
        #: the trailer fields of a chunked request body (lower-case names), set when
        #: the body is complete; read only
        self.request_trailers = _NO_TRAILERS
        self._body_done = not body_expected
        self._body_waiter: asyncio.Future[None] | None = None
        self._streaming = False
        self._complete_cb: Callable[[], None] | None = None
        self._expect_continue = expect_continue
        self._disconnected = False
        self._peer_closed = False
        self._disc_waiters: list[asyncio.Future[None]] | None = None
        self._started = False
        self._finished = False
        self._wrote = False
        self._head: list[bytes] | None = None
        self._content_length = -1
        self._chunked = False
        self._no_body = head.method == "HEAD"
        self._close_after = False
        self._sent = 0
        # (perf_counter, not the loop's clock: uvloop's counts whole milliseconds)
        self.start_time = (
            _clock() if link.settings.access_log is not None or link.tracker.counting else 0.0
        )
        #: when each stage began (see STAGE_*), for the slow-request log; None when it
        #: is off, so that nothing is timed
        self.stages: list[float] | None = None
        if link.settings.stage_times:
            self.stages = [self.start_time, 0.0, 0.0, 0.0, 0.0]

    # -- what the connection tells the exchange ------------------------------------------
    @property
    def body_complete(self) -> bool:
        return self._body_done

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    @property
    def finished(self) -> bool:
        """True once the response has been completely handed over (or failed)."""
        return self._finished

    @property
    def response_body_sent(self) -> int:
        """Response body bytes handed to the connection."""
        return self._sent

    @property
    def must_close(self) -> bool:
        """The connection cannot carry another request after this response."""
        return self._close_after or not self.keep_alive

    def feed(self, data: bytes) -> None:
        """Request body bytes arrived."""
        body = self._body
        if body is None:
            self._body = [data]
        else:
            body.append(data)
        self._body_size += len(data)
        waiter = self._body_waiter
        if waiter is not None:
            self._body_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif self._streaming and self._body_size > BODY_HIGH_WATER:
            self._flow.pause_reading(BODY)

    def complete(self) -> None:
        """The whole request body has arrived."""
        self._body_done = True
        stages = self.stages
        if stages is not None:
            stages[STAGE_BODY] = time.perf_counter()
        waiter = self._body_waiter
        if waiter is not None:
            self._body_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        cb = self._complete_cb
        if cb is not None:
            self._complete_cb = None
            self._flow.loop.call_soon(cb)

    def lost(self) -> None:
        """The connection went away (or the rest of this request never will arrive)."""
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

    def peer_closed(self) -> None:
        """The client closed its side (EOF) while this request was in progress.

        Most clients close only when they are gone, and an app waiting for
        ``http.disconnect`` must learn it, as behind nginx or uvicorn; the response
        may still be written (a client that only half-closed still reads it).
        """
        self._peer_closed = True
        if self._disc_waiters:
            for fut in self._disc_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._disc_waiters = None

    def abandon(self) -> None:
        """The connection refused the rest of this request before its response began:
        it counts as answered (the connection sends the error itself)."""
        self.lost()
        self._finished = True

    # -- request body ------------------------------------------------------------------
    def _send_continue(self) -> None:
        if self._expect_continue:
            self._expect_continue = False
            if not self._started and not self._disconnected:
                self._flow.write(_CONTINUE)

    async def receive_body(self) -> tuple[bytes, bool]:
        self._streaming = True
        flow = self._flow
        while True:
            body = self._body
            if body:
                data = body[0] if len(body) == 1 else b"".join(body)
                body.clear()
                self._body_size = 0
                flow.resume_reading(BODY)
                return data, not self._body_done
            if self._body_done:
                return b"", False
            if self._disconnected:
                raise ClientDisconnected()
            self._send_continue()
            flow.resume_reading(BODY)
            waiter = flow.loop.create_future()
            self._body_waiter = waiter
            await waiter

    def take_buffered_body(self) -> bytes:
        body = self._body
        if not body:
            return b""
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self._body_size = 0
        return data

    def call_when_complete(self, callback: Callable[[], None]) -> None:
        if self._body_done or self._disconnected:
            callback()
            return
        self._complete_cb = callback
        self._send_continue()
        self._flow.resume_reading(BODY)

    async def wait_disconnected(self) -> None:
        if self._disconnected or self._peer_closed:
            return
        fut = self._flow.loop.create_future()
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
        return self._flow.write_paused

    def inform(self, status: int, headers: Iterable[Any]) -> None:
        if self._started:
            raise InvalidResponse("informational response after the final response began")
        if status.__class__ is not int or not 100 <= status <= 199 or status == 101:
            raise InvalidResponse(f"invalid informational status {status!r}")
        if status == 100:
            if not self._expect_continue:
                return  # not asked for, or already sent
            self._expect_continue = False
        if self.head.http_version == "1.0" or self._disconnected:
            return  # an HTTP/1.0 client must not get 1xx (RFC 9110 15.2)
        lines = [status_line(status)]
        # no framing field: a 1xx has no content (RFC 9110 8.6, 15.2), and a client that
        # believed a Content-Length here would take the final response for a body
        header_lines([h for h in headers if not _framing_field(h)], lines)
        lines.append(b"\r\n")
        self._flow.write(b"".join(lines))

    @property
    def forwarded_by(self) -> str | None:
        link = self._link
        trusted = link.settings.forwarded
        if trusted is None:
            return None
        peer = link.peer()
        if peer is None:
            return "unix" if trusted.trust_unix or trusted.trust_all else None
        return peer[0] if trusted.trusts(peer[0]) else None

    def start_response(self, status: int, headers: Iterable[Any]) -> None:
        # ``headers`` is typed loosely on purpose: ASGI apps may send pairs as lists, and
        # each name and value is checked below whatever its type.
        if self._started:
            raise InvalidResponse("response already started")
        line = STATUS_LINES.get(status) if status.__class__ is int else None
        if line is None:
            line = status_line_checked(status)
        link = self._link
        head = [line]
        names = known_header_names
        values = known_header_values
        special = 0
        for item in headers:
            name, value = item
            lname = names.get(name)
            if lname is None:
                lname = check_header_name(name)
            if value not in values:
                check_header_value(name, value)
            if lname in SPECIAL_HEADERS:
                if self._special_header(lname, value):
                    special |= SPECIAL_HEADERS[lname]
                    continue
                special |= SPECIAL_HEADERS[lname]
            head += (name, b": ", value, b"\r\n")
        if not special & HAS_DATE:
            head.append(link.tracker.date_header)
        if not special & HAS_SERVER:
            server = link.settings.server_header
            if server:
                head.append(server)
        self._begin(status, head)

    def start_prepared(self, status: int, prepared: bytes) -> None:
        """:meth:`start_response` with a head made by
        :func:`~bastion.protocol.h1_head.prepared_head` (checked once, not on every
        request)."""
        if self._started:
            raise InvalidResponse("response already started")
        link = self._link
        head = [prepared, link.tracker.date_header]
        server = link.settings.server_header
        if server:
            head.append(server)
        self._begin(status, head)

    def _begin(self, status: int, head: list[bytes]) -> None:
        """The response starts with ``head`` (the status line and header lines so far)."""
        self._started = True
        self.status = status
        stages = self.stages
        if stages is not None:
            stages[STAGE_RESPONSE] = time.perf_counter()
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
            stripped = value.strip()
            if not stripped.isdigit() or not stripped.isascii():
                raise InvalidResponse(f"invalid content-length {value!r}")
            if self._content_length != -1:
                raise InvalidResponse("content-length given twice")
            self._content_length = int(stripped)
            return True
        if lname == b"transfer-encoding":
            return True  # framing is ours to choose
        if lname == b"connection":
            if value.lower().find(b"close") >= 0:
                self._close_after = True
            return True
        return False  # date, server: the app's own replaces ours

    def _end_head(self, head: list[bytes], whole_body: int) -> None:
        """Add framing and connection headers; ``whole_body`` is the body length or -1."""
        cl = self._content_length
        if cl >= 0:
            head.append(content_length_header(cl))
        elif self.status == 204 or self.status == 304:
            pass
        elif whole_body > 0 or (whole_body == 0 and not self._no_body):
            self._content_length = whole_body
            head.append(content_length_header(whole_body))
        elif whole_body == 0:
            pass  # HEAD answered with neither body nor length: GET's length is unknown
        elif self.head.http_version == "1.1":
            self._chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
        else:
            self._close_after = True  # HTTP/1.0: the end of the body is the end of the connection
        if not self.keep_alive or self._close_after or not self._body_done:
            self._close_after = True
            head.append(b"connection: close\r\n\r\n")
        elif self.head.http_version == "1.0":
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

    def write(self, data: object) -> None:
        if self._finished:
            raise InvalidResponse("response already finished")
        chunk = as_bytes(data)
        if self._disconnected:
            return
        flow = self._flow
        if not self._wrote:
            self._wrote = True
            head = self._emit_head(-1)
            if self._no_body or not chunk:
                flow.write(head)
                return
            if len(chunk) > _JOIN_MAX and not self._chunked:
                flow.write(head)  # a large body is not copied to join its head
                flow.write(self._frame(chunk))
                return
            flow.write(head + self._frame(chunk))
            return
        if self._no_body or not chunk:
            return
        flow.write(self._frame(chunk))

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

    def finish(self, data: object = b"", trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self._finished:
            return
        body = as_bytes(data)
        flow = self._flow
        head = self._head
        if trailers and head is not None and not self._wrote and not self._disconnected:
            # trailers need the chunked framing: no Content-Length from the whole body
            self.write(body)
            body = b""
        if head is not None and not self._wrote and not self._disconnected:
            # the common case: the whole response at once, in one write
            self._wrote = True
            self._head = None
            n = len(body)
            self._end_head(head, n)
            if body and not self._no_body:
                cl = self._content_length
                if n > cl:
                    self._close_after = True
                    raise InvalidResponse(f"response body longer than its content-length {cl}")
                if n < cl:
                    self._close_after = True  # short body: the framing is broken
                self._sent = n
                if n > _JOIN_MAX:
                    # a large body is not copied to join its head: the transport keeps
                    # the app's own object for a slow client
                    self._finished = True
                    flow.write(b"".join(head))
                    flow.write(body)
                    self._link.exchange_done(self)
                    return
                head.append(body)
            elif self._content_length > 0 and not self._no_body:
                self._close_after = True
            self._finished = True
            flow.write(b"".join(head))
            self._link.exchange_done(self)
            return
        if self._disconnected:
            self._finished = True
            self._link.exchange_done(self)
            return
        if not self._wrote:
            self._wrote = True
            head_bytes = self._emit_head(len(body))
            out = head_bytes if self._no_body or not body else head_bytes + self._frame(body)
        elif self._no_body:
            out = b""
        elif self._chunked:
            last = trailer_section(trailers) if trailers else b"0\r\n\r\n"
            out = (self._frame(body) + last) if body else last
        else:
            out = self._frame(body) if body else b""
        if not self._no_body and self._content_length >= 0 and self._sent != self._content_length:
            self._close_after = True  # short body: the client must not reuse the framing
        self._finished = True
        if out:
            flow.write(out)
        self._link.exchange_done(self)

    async def drain(self) -> None:
        await self._flow.drain()

    def fail(self, exc: BaseException | None = None, status: int = 500) -> None:
        if self._finished:
            return
        if exc is not None and not isinstance(exc, ClientDisconnected):
            log.error(
                "error while answering %s %s",
                self.head.method,
                self.head.raw_path.decode("latin-1"),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        self._finished = True
        self._close_after = True
        if self._disconnected:
            self._link.exchange_done(self)
            return
        if not self._started or (self._head is not None and not self._wrote):
            self._started = True
            self._wrote = True
            self.status = status
            stages = self.stages
            if stages is not None:
                stages[STAGE_RESPONSE] = time.perf_counter()
            self._flow.write(error_response(status, self._link.tracker.date_header))
        else:
            # the response began: drop the connection (a reset; under TLS no
            # close_notify), so that no client takes a cut body, even one whose end is
            # the connection's close, for a whole one
            self._flow.abort()
        self._link.exchange_done(self)

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        if self._no_body or self._disconnected:
            return
        flow = self._flow
        corked = False
        if not self._wrote:
            self._wrote = True
            head = self._emit_head(-1)
            if not self._chunked and self._content_length >= 0:
                # hold the head back so it leaves in the same packets as the file
                corked = flow.cork(True)
            flow.write(head)
        if self._chunked or self._content_length < 0:
            # no zero-copy inside chunked framing: read and write blocks
            await send_file(flow, fd, offset, count, self._frame, zero_copy=False)
            return
        # never past the length the head announced: a file that grew since the app
        # measured it must not spill its extra bytes into the connection's next response
        left = self._content_length - self._sent
        if count > left:
            count = max(left, 0)
        try:
            self._sent += await send_file(flow, fd, offset, count, None, zero_copy=True)
        finally:
            if corked:
                flow.cork(False)

    # -- upgrade -----------------------------------------------------------------------
    def take_over(self, status: int, headers: Iterable[Any], session: Session) -> Flow:
        if not self.can_upgrade:
            raise InvalidResponse("this request cannot switch protocols")
        if self._started:
            raise InvalidResponse("response already started")
        if status != 101:
            raise InvalidResponse(f"a protocol switch is answered with 101, not {status!r}")
        lines = [status_line(101)]
        header_lines(headers, lines)
        lines.append(self._link.tracker.date_header)
        server = self._link.settings.server_header
        if server:
            lines.append(server)
        lines.append(b"\r\n")
        self._started = self._wrote = self._finished = True
        self.status = 101
        stages = self.stages
        if stages is not None:
            stages[STAGE_RESPONSE] = time.perf_counter()
        self._flow.write(b"".join(lines))
        self._link.switch(self, session)
        return self._flow
