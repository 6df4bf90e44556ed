"""HTTP/1.1 server connections on asyncio/uvloop with httptools (llhttp).

One :class:`HTTP1Protocol` per connection parses requests into :class:`H1Exchange`
objects and hands them, one at a time and in order, to the handler. Responses go back
through the exchange. Ambiguous or malformed requests never reach the handler: they are
answered with 400/408/413/414/417/431/501/505 and the connection is closed.

Nothing here knows about routing or applications.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import httptools

from bastion.protocol.errors import error_response
from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.h1_framing import (
    FRAMING_HEADERS,
    FramingHeaders,
    Reject,
    absolute_target,
    parser_error_status,
)
from bastion.protocol.settings import WRITE_HIGH_WATER, WRITE_LOW_WATER, ProtocolSettings
from bastion.protocol.state import ConnectionTracker
from bastion.protocol.types import Handler

__all__ = ["HTTP1Protocol", "ProtocolSettings"]

log = logging.getLogger("bastion.error")

# Deadline kinds
_NO_DEADLINE = 0
_IDLE = 1  # keep-alive, waiting for the next request
_HEAD = 2  # receiving the request line and headers
_BODY = 3  # receiving the body
_WRITE = 4  # the client is not reading the response
_LINGER = 5  # after an error response: read and discard briefly, then close

# nginx lingering_timeout is 5s and lingering_time 30s; a short linger is enough for the
# client to read the error before the close (a close with unread input sends a reset).
LINGER_SECONDS = 2.0


class HTTP1Protocol(asyncio.Protocol):
    """One HTTP/1.x connection."""

    __slots__ = (
        "_active",
        "_deadline",
        "_deadline_kind",
        "_dispatch_scheduled",
        "_dispatching",
        "_drain_waiter",
        "_eof",
        "_error_status",
        "_framing",
        "_handler",
        "_head_bytes",
        "_head_limit",
        "_headers",
        "_hsize",
        "_in_head",
        "_max_hcount",
        "_max_hsize",
        "_max_url",
        "_parser",
        "_parsing",
        "_paused_by",
        "_pending_reject",
        "_pipeline",
        "_reading_paused",
        "_requests",
        "_unsent",
        "_url",
        "client",
        "closed",
        "loop",
        "server",
        "settings",
        "tracker",
        "transport",
        "write_paused",
    )

    def __init__(
        self, settings: ProtocolSettings, handler: Handler, tracker: ConnectionTracker
    ) -> None:
        self.settings = settings
        self._handler = handler
        self.tracker = tracker
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.closed = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._parsing: H1Exchange | None = None
        self._active: H1Exchange | None = None
        self._pipeline: deque[H1Exchange] = deque()
        self._dispatching = False
        self._dispatch_scheduled = False
        self._reading_paused = False
        self._paused_by: object = None
        self._error_status = 0
        self._eof = False
        self._pending_reject: Reject | None = None
        self._requests = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._hsize = 0
        self._framing: FramingHeaders | None = None  # only once a framing header appears
        self._in_head = False
        self._head_bytes = 0
        self._max_url = settings.max_request_line
        self._max_hsize = settings.max_header_size
        self._max_hcount = settings.max_header_count
        # a head may be the request line plus the header block, with line endings
        self._head_limit = (
            settings.max_request_line
            + settings.max_header_size
            + 4 * settings.max_header_count
            + 64
        )
        self._deadline = 0.0
        self._deadline_kind = _NO_DEADLINE
        self._unsent = 0  # write buffer size when the write timeout was last (re)started

    # -- connection events -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client = (str(peer[0]), int(peer[1]))
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple):
            self.server = (str(sock[0]), int(sock[1]))
        elif isinstance(sock, str) and sock:
            self.server = (sock, None)
        tracker = self.tracker
        if len(tracker.connections) >= self.settings.max_connections and not tracker.reclaim_idle():
            transport.write(error_response(503, tracker.date_header, retry_after=True))  # type: ignore[attr-defined]
            transport.close()
            self.closed = True
            return
        tracker.add(self)
        # While draining, a new connection still gets one answer (with Connection: close):
        # its client may already have sent a request, which must not be lost.
        self._set_deadline(_IDLE, self.settings.keepalive_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.tracker.remove(self)
        for ex in (self._active, self._parsing, *self._pipeline):
            if ex is not None:
                ex._lost()
        self._pipeline.clear()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def eof_received(self) -> bool | None:
        # The client finished sending. Answer what we have, then close.
        self._eof = True
        if self._deadline_kind == _LINGER:
            self._close()
            return None
        active = self._active
        if active is None and not self._pipeline:
            return None  # transport closes itself
        for ex in (active, *self._pipeline):
            if ex is not None:
                ex.keep_alive = False
        parsing = self._parsing
        if parsing is not None:
            # the rest of its body can never come: that request's client has gone
            self._parsing = None
            parsing._lost()
        return True  # keep the write side open for the responses in progress

    def data_received(self, data: bytes) -> None:
        if self._error_status or self.closed:
            return  # refused or lingering: discard
        if self._deadline_kind == _IDLE:
            self._deadline_kind = _HEAD
            self._deadline = self.tracker.now + self.settings.header_timeout
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c) are not served here: answer the request as plain
            # HTTP/1.1, as RFC 9110 allows, and close afterwards.
            for ex in (self._parsing, *self._pipeline):
                if ex is not None:
                    ex.keep_alive = False
            if self._parsing is not None and not self._parsing._body_done:
                self._parsing._complete()
            self._error_status = -1  # ignore anything that follows
        except httptools.HttpParserError as exc:
            cause = self._pending_reject
            if cause is not None:
                self._reject(cause.status, str(cause))
            else:
                te = self._framing.te if self._framing is not None else None
                self._reject(parser_error_status(str(exc), te), str(exc))
        if self._in_head:
            # httptools buffers a header line until it ends: bound that too
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit and not self._error_status:
                self._reject(431, "request head too large")
        # Handlers run from the loop's ready queue, not inside this read callback: all
        # connections that became readable are read first, then answered. Answering
        # inside the callback measured about a third slower on loopback (wrk, c64).
        if self._active is None:
            if self._pipeline and not self._dispatching and not self._dispatch_scheduled:
                self._dispatch_scheduled = True
                self.loop.call_soon(self._dispatch_soon)
        else:
            active = self._active
            if active._complete_cb is not None and active._body_done:
                cb = active._complete_cb
                active._complete_cb = None
                self.loop.call_soon(cb)

    def _dispatch_soon(self) -> None:
        self._dispatch_scheduled = False
        if self._active is None and self._pipeline and not self._dispatching and not self.closed:
            self._dispatch()

    # -- parser callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._hsize = 0
        self._framing = None
        self._in_head = True
        self._head_bytes = 0
        if self._deadline_kind != _HEAD and self._active is None:
            self._set_deadline(_HEAD, self.settings.header_timeout)

    def on_url(self, url: bytes) -> None:
        url = self._url + url if self._url else url
        self._url = url
        if len(url) > self._max_url:
            raise self._remember(Reject(414, "request target too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        headers = self._headers
        headers.append((lname, value))
        if len(headers) > self._max_hcount:
            raise self._remember(Reject(431, "too many header fields"))
        self._hsize += len(name) + len(value)
        if lname in FRAMING_HEADERS:
            framing = self._framing
            if framing is None:
                framing = self._framing = FramingHeaders()
            try:
                framing.add(lname, value, self.settings.max_body_size)
            except Reject as exc:
                raise self._remember(exc) from None
        if self._hsize > self._max_hsize:
            raise self._remember(Reject(431, "header block too large"))

    def _remember(self, exc: Reject) -> Reject:
        # httptools wraps exceptions raised in callbacks; keep ours to read the status back
        self._pending_reject = exc
        return exc

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise self._remember(Reject(505, f"HTTP version {version} not supported"))
        headers = self._headers
        body_expected = False
        expect_continue = False
        if self._framing is not None:
            try:
                body_expected, expect_continue = self._framing.check(version)
            except Reject as exc:
                raise self._remember(exc) from None
        url = self._url
        if url[:1] == b"/":
            raw_path, sep, query = url.partition(b"?")
            if b"#" in query:
                query = query.partition(b"#")[0]
            elif not sep and b"#" in raw_path:
                raw_path = raw_path.partition(b"#")[0]
        else:
            try:
                raw_path, query = absolute_target(url)
            except Reject as exc:
                raise self._remember(exc) from None
        self._requests += 1
        keep_alive = parser.should_keep_alive()
        if keep_alive and (
            self.tracker.draining or self._requests == self.settings.max_keepalive_requests
        ):
            keep_alive = False
        ex = H1Exchange(
            self,
            parser.get_method().decode("ascii"),
            raw_path,
            query,
            version,
            headers,
            keep_alive,
            body_expected,
            expect_continue,
        )
        self._pipeline.append(ex)
        if body_expected:
            self._parsing = ex
            self._set_deadline(_BODY, self.settings.body_timeout)
        else:
            self._deadline_kind = _NO_DEADLINE
        if self._active is not None or len(self._pipeline) > 1:
            self._pause_reading(self)  # bound what a pipelining client can queue

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        ex._received += len(body)
        if ex._received > self.settings.max_body_size:
            raise self._remember(Reject(413, "request body too large"))
        self._deadline = self.tracker.now + self.settings.body_timeout
        ex._feed(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        if ex is not None:
            self._parsing = None
            ex._complete()
            if self._deadline_kind == _BODY:
                self._deadline_kind = _NO_DEADLINE

    # -- dispatching -------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._dispatching = True
        try:
            while self._active is None and self._pipeline and not self.closed:
                if self.write_paused:
                    self._next_request()  # hold the pipeline until the client reads
                    break
                ex = self._pipeline.popleft()
                self._active = ex
                try:
                    self._handler(ex)
                except BaseException as exc:  # the handler must not raise; contain it
                    ex.fail(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._dispatching = False
        if self._active is None and not self._pipeline:
            if self._error_status > 0:
                self._send_error()
            elif self._reading_paused and self._paused_by is self:
                self._resume_reading(self)

    def _exchange_done(self, ex: H1Exchange) -> None:
        """Called by the exchange when its response has been completely handed over."""
        if ex is not self._active:
            return
        self._active = None
        tracker = self.tracker
        tracker.requests_served += 1
        if tracker.on_request is not None:
            tracker.on_request()
        access_log = self.settings.access_log
        if access_log is not None:
            try:
                access_log(ex, ex._status, ex._sent, self.loop.time() - ex._start)
            except Exception:
                log.exception("access log failed")
        if self.closed:
            return
        if not ex._body_done:
            self._linger()  # the app answered without reading the whole request body
            return
        if ex._close_after or not ex.keep_alive:
            self._close()
            return
        self._next_request()

    def _next_request(self) -> None:
        """Go on after a response: the next pipelined request, a pending error, or wait."""
        if self.write_paused:
            # The client is not reading our responses: answer nothing more (and read
            # nothing more) until it does, or its responses would pile up in memory.
            self._pause_reading(self)
            self._start_write_timeout()
            return
        if self._pipeline:
            if not self._dispatching:
                self._dispatch()
            return
        if self._error_status > 0:
            self._send_error()
            return
        if self._parsing is None:
            if not self._in_head:
                self._set_deadline(_IDLE, self.settings.keepalive_timeout)
            elif self._deadline_kind != _HEAD:
                # the next head began while this response was in progress: its time
                # starts now
                self._set_deadline(_HEAD, self.settings.header_timeout)
        if self._reading_paused:
            self._resume_reading(self._paused_by)

    # -- errors --------------------------------------------------------------------------
    def _reject(self, status: int, reason: str) -> None:
        """Refuse the request being parsed; answer once earlier responses are done."""
        log.debug("rejecting request from %s: %d %s", self.client, status, reason)
        self._error_status = status
        ex = self._parsing
        if ex is not None:
            # a request already handed to the handler (e.g. its body broke off)
            self._parsing = None
            ex.keep_alive = False
            if ex in self._pipeline:
                self._pipeline.remove(ex)
            elif ex is self._active:
                if not ex._started:
                    ex._lost()
                    ex._finished = True
                    self._active = None
                else:
                    ex._lost()
                    self._close()
                    return
        self._pause_reading(self)
        if self._active is None and not self._pipeline:
            self._send_error()

    def _send_error(self) -> None:
        status = self._error_status
        self._error_status = -1
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.write(error_response(status, self.tracker.date_header))
        self._linger()

    def _linger(self) -> None:
        """Half-close and drain what the client is still sending, then close.

        Closing with unread input makes the kernel answer with a reset, which can destroy
        the response the client has not read yet (nginx's lingering close avoids it too).
        """
        transport = self.transport
        if transport is None or self.closed:
            return
        self._error_status = -1  # whatever arrives from now on is discarded
        if self._eof:
            self._close()  # the client has stopped sending already: nothing to drain
            return
        try:
            can_eof = transport.can_write_eof()
        except (AttributeError, NotImplementedError):
            can_eof = False
        if not can_eof:
            self._close()
            return
        transport.write_eof()
        self._set_deadline(_LINGER, LINGER_SECONDS)
        if self._reading_paused:
            self._reading_paused = False
            self._paused_by = None
            transport.resume_reading()

    # -- deadlines -----------------------------------------------------------------------
    def _set_deadline(self, kind: int, seconds: float) -> None:
        self._deadline_kind = kind
        self._deadline = self.tracker.now + seconds

    def _clear_deadline(self) -> None:
        self._deadline_kind = _NO_DEADLINE

    def check_deadline(self, now: float) -> None:
        kind = self._deadline_kind
        if kind == _NO_DEADLINE or now < self._deadline:
            return
        if kind == _WRITE:
            self._write_timed_out(now)
            return
        if self.closed:
            return
        if kind == _IDLE:
            self._close()
        elif kind == _HEAD:
            if self._active is None and not self._pipeline:
                self._error_status = 408
                self._send_error()
            else:
                self._close()
        elif kind == _BODY:
            ex = self._parsing
            self._deadline_kind = _NO_DEADLINE
            if ex is not None and (ex is not self._active or not ex._started):
                self._reject(408, "request body timed out")
            else:
                self.abort()
        elif kind == _LINGER:
            self._close()

    def _write_timed_out(self, now: float) -> None:
        """The client has not read for a while: give it more time if it read anything."""
        transport = self.transport
        unsent = transport.get_write_buffer_size() if transport is not None else 0
        if 0 < unsent < self._unsent:
            self._unsent = unsent
            self._deadline = now + max(self.settings.body_timeout, 1.0)
            return
        self._deadline_kind = _NO_DEADLINE
        self.closed = True
        if transport is not None:
            transport.abort()  # also after close(), which would wait for the client

    def _start_write_timeout(self) -> None:
        transport = self.transport
        self._unsent = transport.get_write_buffer_size() if transport is not None else 0
        self._set_deadline(_WRITE, max(self.settings.body_timeout, 1.0))

    # -- flow control --------------------------------------------------------------------
    def transport_write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    def _pause_reading(self, by: object) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self._paused_by = by
            self.transport.pause_reading()

    def _resume_reading(self, by: object) -> None:
        if (
            not self._reading_paused
            or self._error_status != 0
            or self.closed
            or self.transport is None
        ):
            return
        if self._paused_by is not by:
            # Only whoever paused may resume, except the active request waiting for its
            # own body: reading was held back for it while it was queued.
            if by is not self._active or by is not self._parsing:
                return
        elif by is self and (self._pipeline or self._active is not None or self.write_paused):
            return  # still holding pipelined requests back
        self._reading_paused = False
        self._paused_by = None
        self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._deadline_kind == _NO_DEADLINE and not self.closed:
            self._start_write_timeout()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._deadline_kind == _WRITE and not self.closed:
            self._clear_deadline()
            if self._active is None:
                self._next_request()  # held back while the client was not reading
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        if not self.write_paused or self.closed:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self.loop.create_future()
        await waiter

    # -- closing -------------------------------------------------------------------------
    @property
    def is_idle(self) -> bool:
        return self._active is None and not self._pipeline and self._deadline_kind == _IDLE

    def shutdown(self) -> None:
        if self.closed:
            return
        if self._active is None and not self._pipeline and not self._in_head:
            if self._requests == 0:
                # Accepted but nothing read yet: a request may be in flight. Give it
                # a short while; its response will carry Connection: close.
                self._set_deadline(_IDLE, min(self.settings.keepalive_timeout, 1.0))
                return
            self._close()
            return
        for ex in (self._active, *self._pipeline):
            if ex is not None:
                ex.keep_alive = False

    def _close(self) -> None:
        transport = self.transport
        if not self.closed and transport is not None:
            self.closed = True
            self._deadline_kind = _NO_DEADLINE
            transport.close()
            if transport.get_write_buffer_size():
                # The transport closes once the rest is sent: a client that stops
                # reading must not keep the connection (and its slot) open for ever.
                self._start_write_timeout()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        self.closed = True
