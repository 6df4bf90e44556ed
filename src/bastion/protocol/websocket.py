"""WebSocket (RFC 6455) on an upgraded HTTP/1.1 connection, built on wsproto.

Three parts, none of which knows about routes or applications:

* :func:`read_handshake` checks an opening handshake strictly (RFC 6455 section 4.2.1):
  ``GET``, HTTP/1.1, ``Host``, ``Upgrade: websocket``, ``Connection: upgrade``, a
  ``Sec-WebSocket-Key`` of 16 base64 bytes and ``Sec-WebSocket-Version: 13``. It returns
  the offered subprotocols and the negotiated ``permessage-deflate`` (RFC 7692), or the
  status to refuse with (400, or 426 with ``Sec-WebSocket-Version: 13``).
* :func:`accept_headers` builds the ``101`` response's headers.
* :class:`WebSocketSession` is the :class:`~bastion.protocol.types.Session` that takes the
  connection over: it parses frames (wsproto), answers pings, keeps messages under
  ``max_message_size`` (1009), queues at most ``max_queue`` unread messages and then stops
  reading the socket (the flow's ``SESSION`` reason), pings a silent peer and drops it
  when no pong comes, and runs the close handshake. Its owner (a gateway) reads messages
  with :meth:`WebSocketSession.receive` and writes with :meth:`WebSocketSession.send`.

Protocol errors close with the code RFC 6455 section 7.4.1 gives them: 1002 for framing
errors (unmasked client frame, reserved bits or opcodes, a fragmented control frame, ...),
1007 for text that is not UTF-8, 1009 for a message over the limit (also once inflated),
and 1011 when the peer stops answering pings or the application fails.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import zlib
from collections import deque
from typing import TYPE_CHECKING

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits
from wsproto.utilities import LocalProtocolError

from bastion.protocol.flow import SESSION
from bastion.protocol.head import RequestHead

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

    from bastion.protocol.flow import Flow

__all__ = [
    "Handshake",
    "SessionClosed",
    "WebSocketSession",
    "WebSocketSettings",
    "accept_headers",
    "is_websocket_request",
    "read_handshake",
    "valid_close_code",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

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


class WebSocketSettings:
    """Limits and timers of every session of a server (defaults: see docs/websocket.md)."""

    __slots__ = (
        "close_timeout",
        "compression",
        "max_message_size",
        "max_queue",
        "ping_interval",
        "ping_timeout",
    )

    def __init__(
        self,
        max_message_size: int = 16 * 1024 * 1024,
        max_queue: int = 32,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        close_timeout: float = 10.0,
        compression: bool = True,
    ) -> None:
        #: the largest message (bytes of binary, characters of text, once inflated)
        self.max_message_size = max_message_size
        #: unread messages held before the socket stops being read
        self.max_queue = max(1, max_queue)
        #: a peer silent this long is pinged (0: never)
        self.ping_interval = ping_interval
        #: ... and closed with 1011 if it still says nothing this long after
        self.ping_timeout = ping_timeout
        #: how long to wait for the peer's close frame after ours
        self.close_timeout = close_timeout
        #: negotiate permessage-deflate when the client offers it
        self.compression = compression


# -- the opening handshake ----------------------------------------------------------------
def _tokens(head: RequestHead, name: bytes) -> list[bytes]:
    """The comma-separated tokens of every ``name`` header, stripped and lower-cased."""
    out: list[bytes] = []
    for key, value in head.headers:
        if key == name:
            for token in value.split(b","):
                token = token.strip()
                if token:
                    out.append(token.lower())
    return out


def is_websocket_request(head: RequestHead) -> bool:
    """Whether the request asks to switch to WebSocket (``Upgrade: websocket``)."""
    for key, value in head.headers:
        if key == b"upgrade":
            for token in value.split(b","):
                if token.strip().lower() == b"websocket":
                    return True
    return False


class Handshake:
    """A valid opening handshake: what the session and the 101 need from it."""

    __slots__ = ("accept", "extension", "extension_header", "subprotocols")

    def __init__(
        self,
        accept: bytes,
        subprotocols: list[str],
        extension: PerMessageDeflate | None,
        extension_header: bytes,
    ) -> None:
        #: the Sec-WebSocket-Accept value
        self.accept = accept
        #: the subprotocols the client offered, in its order of preference
        self.subprotocols = subprotocols
        #: permessage-deflate, when negotiated
        self.extension = extension
        #: its Sec-WebSocket-Extensions response value (b"" when none)
        self.extension_header = extension_header


class HandshakeError(Exception):
    """The request is not a valid WebSocket opening handshake."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_handshake(head: RequestHead, settings: WebSocketSettings) -> Handshake:
    """Check an opening handshake (RFC 6455 section 4.2.1); raise :class:`HandshakeError`
    with the status to answer (400, or 426 for a version other than 13)."""
    if head.method != "GET":
        raise HandshakeError(400, "a WebSocket handshake is a GET request")
    if head.http_version != "1.1":
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    if head.header(b"host") is None:
        raise HandshakeError(400, "missing Host header")
    if b"websocket" not in _tokens(head, b"upgrade"):
        raise HandshakeError(400, "Upgrade header does not name websocket")
    if b"upgrade" not in _tokens(head, b"connection"):
        raise HandshakeError(400, "Connection header does not name upgrade")
    versions = [value for key, value in head.headers if key == b"sec-websocket-version"]
    if versions != [b"13"]:
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version (13 is)")
    keys = [value for key, value in head.headers if key == b"sec-websocket-key"]
    if len(keys) != 1:
        raise HandshakeError(400, "exactly one Sec-WebSocket-Key is needed")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64")
    subprotocols: list[str] = []
    for token in _offered(head, b"sec-websocket-protocol"):
        subprotocols.append(token.decode("latin-1"))
    extension: PerMessageDeflate | None = None
    response = b""
    if settings.compression:
        for value in _offered(head, b"sec-websocket-extensions"):
            accepted = _negotiate_deflate(value, settings.max_message_size)
            if accepted is not None:
                extension, response = accepted
                break
    digest = hashlib.sha1(key + _GUID).digest()  # the RFC's choice, not for security
    return Handshake(base64.b64encode(digest), subprotocols, extension, response)


def _offered(head: RequestHead, name: bytes) -> list[bytes]:
    """The comma-separated items of every ``name`` header, case kept."""
    out: list[bytes] = []
    for key, value in head.headers:
        if key == name:
            for item in value.split(b","):
                item = item.strip()
                if item:
                    out.append(item)
    return out


_DEFLATE_PARAMS = (
    b"server_no_context_takeover",
    b"client_no_context_takeover",
    b"server_max_window_bits",
    b"client_max_window_bits",
)


def _negotiate_deflate(offer: bytes, limit: int) -> tuple[PerMessageDeflate, bytes] | None:
    """Accept one ``permessage-deflate`` offer (RFC 7692 section 7.1), or None to decline
    it (another extension, an unknown or repeated parameter, a bad value)."""
    parts = [part.strip() for part in offer.split(b";")]
    if parts[0].lower() != b"permessage-deflate":
        return None
    seen: set[bytes] = set()
    server_bits: int | None = None
    client_bits: int | None = None
    client_bits_offered = False
    server_nct = client_nct = False
    for param in parts[1:]:
        name, eq, value = param.partition(b"=")
        name = name.strip().lower()
        value = value.strip().strip(b'"')
        if name not in _DEFLATE_PARAMS or name in seen:
            return None
        seen.add(name)
        if name.endswith(b"_window_bits"):
            if eq:
                if not value.isdigit() or not 9 <= int(value) <= 15:
                    return None  # 8 is legal, but zlib cannot inflate raw deflate with it
                bits = int(value)
            elif name == b"server_max_window_bits":
                return None  # server_max_window_bits needs a value
            else:
                bits = 15
            if name == b"server_max_window_bits":
                server_bits = bits
            else:
                client_bits = bits
                client_bits_offered = True
        elif eq:
            return None  # the *_no_context_takeover parameters have no value
        elif name == b"server_no_context_takeover":
            server_nct = True
        else:
            client_nct = True
    ext = BoundedDeflate(
        limit,
        client_no_context_takeover=client_nct,
        client_max_window_bits=client_bits,
        server_no_context_takeover=server_nct,
        server_max_window_bits=server_bits,
    )
    ext.enable()
    answer = [b"permessage-deflate"]
    if server_nct:
        answer.append(b"server_no_context_takeover")
    if client_nct:
        answer.append(b"client_no_context_takeover")
    if server_bits is not None:
        answer.append(b"server_max_window_bits=%d" % server_bits)
    if client_bits_offered and client_bits is not None:
        answer.append(b"client_max_window_bits=%d" % client_bits)
    return ext, b"; ".join(answer)


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates a message past ``limit`` bytes: a message
    that would is refused with 1009 before the memory is spent (a compression bomb)."""

    def __init__(
        self,
        limit: int,
        client_no_context_takeover: bool,
        client_max_window_bits: int | None,
        server_no_context_takeover: bool,
        server_max_window_bits: int | None,
    ) -> None:
        super().__init__(
            client_no_context_takeover=client_no_context_takeover,
            client_max_window_bits=client_max_window_bits,
            server_no_context_takeover=server_no_context_takeover,
            server_max_window_bits=server_max_window_bits,
        )
        self.limit = limit
        self.inflated = 0  # bytes of the current message so far

    def enable(self) -> None:
        self._enabled = True

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        if self._inbound_compressed is None and not opcode.iscontrol():
            self.inflated = 0  # a new message starts
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None
        room = self.limit - self.inflated + 1
        try:
            out = decompressor.decompress(data, room)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += len(out)
        if self.inflated > self.limit:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin:
            return None
        if not self._inbound_is_compressible or not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        out = self._inflate(b"\x00\x00\xff\xff")
        if isinstance(out, CloseReason):
            return out
        if self.client_no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return out


def accept_headers(
    handshake: Handshake,
    subprotocol: str | None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> list[tuple[bytes, bytes]]:
    """The headers of the ``101`` that accepts ``handshake``.

    ``extra`` (from the application) may not set the handshake's own headers; those are
    dropped from it.
    """
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", handshake.accept),
    ]
    if subprotocol is not None:
        headers.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
    if handshake.extension_header:
        headers.append((b"sec-websocket-extensions", handshake.extension_header))
    if extra:
        for name, value in extra:
            lower = name.lower()
            if lower in _OWN_HEADERS:
                continue
            headers.append((lower, value))
    return headers


_OWN_HEADERS = frozenset(
    (
        b"upgrade",
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"content-length",
        b"transfer-encoding",
    )
)


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
        "_flow",
        "_heard",
        "_loop",
        "_parts",
        "_pending",
        "_pinged",
        "_queue",
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
        self._flow: Flow | None = None
        self._pending: list[bytes] | None = None  # bytes that came before start()
        self._queue: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._parts: list[str | bytes | bytearray] = []  # fragments of the message being received
        self._size = 0
        self._text = False
        self._heard = True  # something came from the peer since the last timer tick
        self._pinged = False  # a keep-alive ping is out, unanswered
        self._dead = False  # the frame stream is broken (after a protocol error): discard
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
                message = queue.popleft()
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
        """Wait while the peer reads slower than we write."""
        if self._flow is not None:
            await self._flow.drain()

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
            self._flow.abort()

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
            # no pong, nothing at all, for ping_timeout: a dead peer
            self.close_code = INTERNAL_ERROR
            self.fail(INTERNAL_ERROR, "keepalive ping timeout")
            if flow is not None:
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
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        flow = self._flow
        if flow is not None:
            flow.resume_reading(SESSION)
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
