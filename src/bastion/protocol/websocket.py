"""A WebSocket session (RFC 6455) on an upgraded HTTP/1.1 connection, built on wsproto.

:class:`WebSocketSession` is the :class:`~bastion.protocol.types.Session` that takes the
connection over after the ``101`` (the handshake is :mod:`bastion.protocol.ws_handshake`):
it parses frames (whole simple frames itself when no extension is in use, the rest with
wsproto; see :meth:`WebSocketSession._frames`), answers pings, keeps messages under
``max_message_size`` (1009), queues at most ``max_queue`` unread messages and then stops
reading the socket (the flow's ``SESSION`` reason), pings a silent peer and drops it when
no pong comes, and runs the close handshake. Its owner (a gateway) reads messages with
:meth:`WebSocketSession.receive` and writes with :meth:`WebSocketSession.send`. Nothing
here knows about routes or applications.

Protocol errors close with the code RFC 6455 section 7.4.1 gives them: 1002 for framing
errors (unmasked client frame, reserved bits or opcodes, a fragmented control frame, ...),
1007 for text that is not UTF-8, 1009 for a message over the limit (also once inflated),
and 1011 when the peer stops answering pings or the application fails.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import Extension
from wsproto.utilities import LocalProtocolError

from bastion.protocol.flow import SESSION
from bastion.protocol.ws_handshake import WebSocketSettings
from bastion.protocol.ws_mask import unmask

if TYPE_CHECKING:
    from bastion.protocol.flow import Flow

__all__ = [
    "SessionClosed",
    "WebSocketSession",
    "frame_head",
    "valid_close_code",
]


def frame_head(opcode: int, size: int) -> bytes:
    """The head of a final, unmasked frame (a server's) of ``size`` payload bytes."""
    if size < 126:
        return bytes((0x80 | opcode, size))
    if size < 0x10000:
        return bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")


# close codes (RFC 6455 section 7.4.1)
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
NO_STATUS = 1005
ABNORMAL = 1006
INVALID_DATA = 1007
TOO_BIG = 1009
INTERNAL_ERROR = 1011

# session states
OPEN = 0
CLOSING = 1  # we sent a close frame and wait for the peer's
CLOSED = 2


class SessionClosed(OSError):
    """A message was sent on a WebSocket that is closing or closed (ASGI 2.4 asks for an
    ``OSError`` subclass here)."""


def valid_close_code(code: int) -> bool:
    """Whether an endpoint may send ``code`` in a close frame (RFC 6455 section 7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or (
        3000 <= code <= 4999
    )


# -- the session ---------------------------------------------------------------------------
class WebSocketSession:
    """One WebSocket connection after the ``101``: frames in and out, limits, keep-alive
    and the close handshake. Create it, pass it to ``take_over`` and call :meth:`start`
    with the flow that returns."""

    __slots__ = (
        "_closing_timer",
        "_conn",
        "_dead",
        "_direct",
        "_flow",
        "_heard",
        "_loop",
        "_parts",
        "_pending",
        "_pinged",
        "_plain",
        "_pong_owed",
        "_queue",
        "_rx",
        "_rx_need",
        "_rx_size",
        "_size",
        "_text",
        "_timer",
        "_waiter",
        "bytes_in",
        "bytes_out",
        "close_code",
        "close_reason",
        "settings",
        "state",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: WebSocketSettings,
        extension: Extension | None = None,
    ) -> None:
        self._loop = loop
        self.settings = settings
        self._conn = Connection(ConnectionType.SERVER, [extension] if extension else None)
        # Without an extension, whole unfragmented data frames are parsed here (and our
        # frames built here): wsproto's per-frame Python work and its copies of the payload
        # were most of a message's cost. wsproto still gets control frames (each whole),
        # and everything from the first frame that is not that simple (a fragment, a
        # reserved bit or opcode, an unmasked frame): from there on it parses the rest.
        self._plain = extension is None  # our frames are built here
        self._direct = extension is None  # client frames are parsed here (see _frames)
        self._rx: list[bytes] | None = None  # the start of an incomplete frame
        self._rx_size = 0  # bytes in _rx
        self._rx_need = 0  # bytes _rx must hold before parsing can go on
        self._flow: Flow | None = None
        self._pending: list[bytes] | None = None  # bytes that came before start()
        # at most max_queue messages: a list (56 bytes empty) rather than a deque (~600)
        self._queue: list[str | bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._parts: list[str | bytes | bytearray] = []  # fragments of the message being received
        self._size = 0
        self._text = False
        self._heard = True  # something came from the peer since the last timer tick
        self._pinged = False  # a keep-alive ping is out, unanswered
        self._dead = False  # the frame stream is broken (after a protocol error): discard
        self._pong_owed: bytes | None = None  # a ping's payload, to answer once writable
        self._timer: asyncio.TimerHandle | None = None
        self._closing_timer: asyncio.TimerHandle | None = None
        self.state = OPEN
        #: the close code and reason, once the session is closing or closed
        self.close_code = 0
        self.close_reason = ""
        #: bytes read from and written to the socket since the switch (for the access log)
        self.bytes_in = 0
        self.bytes_out = 0

    def start(self, flow: Flow) -> None:
        """The connection is ours: ``flow`` is what :meth:`Exchange.take_over` returned."""
        self._flow = flow
        if not flow.closed:  # (closed: connection_lost is on its way; no cycle to leave)
            flow.on_writable = self._writable
        interval = self.settings.ping_interval
        if interval > 0:
            self._timer = self._loop.call_later(interval, self._tick)
        pending = self._pending
        if pending is not None:
            self._pending = None
            for data in pending:
                self.data_received(data)

    # -- the Session protocol ----------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._flow is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(data)
            return
        self.bytes_in += len(data)
        self._heard = True
        if self._dead or self.state == CLOSED:
            return
        if self._direct:
            rx = self._rx
            if rx is not None:
                rx.append(data)
                self._rx_size += len(data)
                if self._rx_size < self._rx_need:
                    return
                self._rx = None
                data = b"".join(rx)
            data = self._frames(data)
            if not data:
                return
        self._feed(data)

    def _frames(self, data: bytes) -> bytes:
        """Take the whole, final, masked text and binary frames at the start of ``data``
        (and pass whole control frames to wsproto); keep an incomplete frame for the next
        read. Return the bytes from the first frame wsproto must parse (then it parses
        everything that follows), or b"" when none is left."""
        end = len(data)
        pos = 0
        limit = self.settings.max_message_size
        while pos < end:
            if end - pos < 2:
                self._keep(data, pos, pos + 2)
                return b""
            b0 = data[pos]
            b1 = data[pos + 1]
            if (b0 & 0xF0) != 0x80 or not b1 & 0x80:
                # a fragment, a reserved bit, an unmasked frame: wsproto's (checked before
                # waiting for a mask key, which an unmasked frame of 2 to 5 bytes lacks)
                break
            size = b1 & 0x7F
            if size < 126:
                head = pos + 6
            elif size == 126:
                head = pos + 8
            else:
                head = pos + 14
            if head > end:
                self._keep(data, pos, head)
                return b""
            if size == 126:
                size = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif size == 127:
                size = int.from_bytes(data[pos + 2 : pos + 10], "big")
            opcode = b0 & 0x0F
            if opcode == 1 or opcode == 2:
                if size > limit:
                    break  # wsproto reads it as it comes; 1009 once the limit is passed
            elif opcode < 8 or opcode > 10 or size > 125:
                break  # a continuation, a reserved opcode, a control frame too long
            stop = head + size
            if stop > end:
                self._keep(data, pos, stop)
                return b""
            if opcode > 2:
                self._feed(data[pos:stop] if pos or stop != end else data)
            elif self.state == OPEN:  # closing: what still comes is dropped
                payload = unmask(memoryview(data)[head:stop], data[head - 4 : head])
                if opcode == 1:
                    try:
                        text = payload.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        self.fail(INVALID_DATA, str(exc))
                        return b""
                    self._push(text)
                else:
                    self._push(payload)
            if self._dead or self.state == CLOSED:
                return b""
            pos = stop
        else:
            return b""
        self._direct = False
        return data[pos:] if pos else data

    def _keep(self, data: bytes, start: int, need: int) -> None:
        """Keep ``data[start:]``, the start of a frame, until ``need - start`` bytes of it
        have come."""
        rest = data[start:] if start else data
        self._rx = [rest]
        self._rx_size = len(rest)
        self._rx_need = need - start

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` with wsproto and act on its events."""
        conn = self._conn
        try:
            conn.receive_data(data)
        except LocalProtocolError:
            return
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                assert isinstance(event, (TextMessage, BytesMessage))
                if self.state != OPEN:
                    continue  # closing: what still comes is dropped
                self._message(event.data, kind is TextMessage, event.message_finished)
            elif kind is Ping:
                assert isinstance(event, Ping)
                if conn.state is ConnectionState.OPEN:
                    flow = self._flow
                    if flow is not None and flow.write_paused:
                        # The peer does not read what we send: a pong for each of its
                        # pings would pile up here without bound. Only the latest ping
                        # needs one (RFC 6455 5.5.3); it goes when the peer reads again.
                        self._pong_owed = bytes(event.payload)
                    else:
                        self._write(conn.send(event.response()))
            elif kind is Pong:
                self._pinged = False
            elif kind is CloseConnection:
                assert isinstance(event, CloseConnection)
                self._close_event(event)
                return
            if self._dead:
                return

    def eof_received(self) -> None:
        self._heard = True
        if self.state != CLOSED:
            self._closed(ABNORMAL, "")
        if self._flow is not None:
            self._flow.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._flow is not None:
            self._flow.on_writable = None  # no session <-> flow cycle left behind
        if self.state != CLOSED:
            self._closed(ABNORMAL, "")
        self._wake()

    def shutdown(self) -> None:
        """The server is stopping: close with 1001."""
        self.close(GOING_AWAY, "server shutting down")

    # -- receiving ---------------------------------------------------------------------
    def _message(self, data: str | bytes | bytearray, text: bool, finished: bool) -> None:
        size = self._size + len(data)
        if size > self.settings.max_message_size:
            self.fail(TOO_BIG, "message too big")
            return
        if finished and not self._parts:
            self._size = 0
            self._push(bytes(data) if isinstance(data, bytearray) else data)
            return
        self._size = size
        self._text = text
        if data:
            self._parts.append(data)
        if finished:
            parts = self._parts
            self._parts = []
            self._size = 0
            if text:
                self._push("".join(parts))  # type: ignore[arg-type]
            else:
                self._push(b"".join(parts))  # type: ignore[arg-type]

    def _push(self, message: str | bytes) -> None:
        queue = self._queue
        queue.append(message)
        if len(queue) >= self.settings.max_queue and self._flow is not None:
            self._flow.pause_reading(SESSION)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _close_event(self, event: CloseConnection) -> None:
        conn = self._conn
        if conn.state is ConnectionState.OPEN:
            # wsproto could not parse what came (it reports that as a close it made up)
            self.fail(event.code, event.reason or "")
            return
        if conn.state is ConnectionState.REMOTE_CLOSING:
            # the peer closes: answer with its code, then close TCP (the server closes first)
            code = event.code
            self._write(conn.send(event.response()))
            self._closed(code if code != NO_STATUS else NO_STATUS, event.reason or "")
        elif self.state != CLOSED:
            # the peer answered our close
            self._closed(self.close_code, self.close_reason)
        self._cancel_timers()
        if self._flow is not None:
            self._flow.close()

    async def receive(self) -> str | bytes | None:
        """The next message, or None once the session is closed (then see
        :attr:`close_code` and :attr:`close_reason`). Messages that arrived before the
        close are still returned first."""
        while True:
            queue = self._queue
            if queue:
                message = queue.pop(0)
                flow = self._flow
                if (
                    flow is not None
                    and flow.paused_for & SESSION
                    and len(queue) < (self.settings.max_queue)
                ):
                    flow.resume_reading(SESSION)
                return message
            if self.state == CLOSED:
                return None
            waiter = self._loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    @property
    def open(self) -> bool:
        return self.state == OPEN

    # -- sending -----------------------------------------------------------------------
    def send(self, data: str | bytes) -> None:
        """Send one message (text for ``str``); raise :class:`SessionClosed` unless open."""
        if self.state != OPEN:
            raise SessionClosed("the WebSocket is closed")
        if self._plain:
            # state OPEN: wsproto's connection is open too (any close changes our state)
            if isinstance(data, str):
                payload = data.encode("utf-8")
                self._write(frame_head(1, len(payload)) + payload)
            else:
                self._write(frame_head(2, len(data)) + data)
            return
        if isinstance(data, str):
            event: TextMessage | BytesMessage = TextMessage(data=data)
        else:
            event = BytesMessage(data=data)
        self._write(self._conn.send(event))

    @property
    def writing_paused(self) -> bool:
        flow = self._flow
        return flow is not None and flow.write_paused and not flow.closed

    async def drain(self) -> None:
        """Wait while the peer reads slower than we write (not once the session is
        over: its end wakes this wait too). Raise :class:`SessionClosed` when the
        session ended while the message waited: it was not sent."""
        flow = self._flow
        if flow is None or self.state == CLOSED:
            return
        await flow.drain()
        if self.state == CLOSED and flow.write_paused:
            raise SessionClosed("the WebSocket closed before the message was sent")

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the close handshake (nothing if it has started)."""
        if self.state != OPEN:
            return
        conn = self._conn
        if conn.state is ConnectionState.OPEN:
            self._write(conn.send(CloseConnection(code=code, reason=reason or None)))
        self.state = CLOSING
        self.close_code = code
        self.close_reason = reason
        self._wait_for_close()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): send a close frame with ``code``,
        read nothing more, and close the socket once the peer has closed its side (or
        after ``close_timeout``)."""
        if self.state == CLOSED:
            return
        conn = self._conn
        if conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            try:
                self._write(conn.send(CloseConnection(code=code, reason=reason[:100] or None)))
            except LocalProtocolError:
                pass
        self._dead = True
        self._closed(code, reason)
        flow = self._flow
        if flow is not None and not flow.closed:
            flow.reset_reading()  # keep reading (and discarding) so the close frame lands
            try:
                flow.transport.write_eof()
            except (AttributeError, NotImplementedError, OSError, RuntimeError):
                flow.close()
                return
            self._wait_for_close()

    def _wait_for_close(self) -> None:
        if self._closing_timer is None:
            self._closing_timer = self._loop.call_later(
                self.settings.close_timeout, self._close_timed_out
            )

    def _close_timed_out(self) -> None:
        self._closing_timer = None
        if self.state != CLOSED:
            self._closed(self.close_code or ABNORMAL, self.close_reason)
        if self._flow is not None:
            # a plain close (FIN), not a reset: the peer may still be reading our close
            # frame; a peer that reads nothing is dropped by the send timeout
            self._flow.close()

    def _writable(self) -> None:
        """The peer reads again: the pong held back for its latest ping goes now."""
        payload = self._pong_owed
        if payload is not None:
            self._pong_owed = None
            if self._conn.state is ConnectionState.OPEN:
                self._write(self._conn.send(Pong(payload=payload)))

    def _write(self, data: bytes | bytearray) -> None:
        flow = self._flow
        if flow is not None:
            self.bytes_out += len(data)
            flow.write(data)  # type: ignore[arg-type]

    # -- keep-alive --------------------------------------------------------------------
    def _tick(self) -> None:
        self._timer = None
        if self.state != OPEN:
            return
        settings = self.settings
        flow = self._flow
        if self._heard or (flow is not None and flow.paused_for & SESSION):
            # the peer spoke, or we are the ones not reading: it is alive
            self._heard = False
            self._pinged = False
            self._timer = self._loop.call_later(settings.ping_interval, self._tick)
            return
        if self._pinged:
            # no pong, nothing at all, for ping_timeout: a dead peer. Closed, so that a
            # peer still reading gets the 1011; dropped when it reads nothing (a close
            # would wait on it until the send timeout)
            self.close_code = INTERNAL_ERROR
            self.fail(INTERNAL_ERROR, "keepalive ping timeout")
            if flow is not None:
                if flow.write_paused:
                    flow.abort()
                else:
                    flow.close()
            return
        self._pinged = True
        self._write(self._conn.send(Ping(payload=b"bastion")))
        self._timer = self._loop.call_later(settings.ping_timeout, self._tick)

    # -- the end -----------------------------------------------------------------------
    def _closed(self, code: int, reason: str) -> None:
        self.state = CLOSED
        self.close_code = code
        self.close_reason = reason
        self._parts = []
        self._rx = None
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        flow = self._flow
        if flow is not None:
            flow.resume_reading(SESSION)
            flow.wake_waiters()  # an app waiting to send learns the session is over
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._closing_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._closing_timer = None
