"""The WebSocket opening handshake (RFC 6455 section 4.2) and its permessage-deflate
negotiation (RFC 7692), with the settings every session of a server shares.

:func:`read_handshake` checks a request strictly and says what was offered and
negotiated, or what to refuse with; :func:`accept_headers` builds the ``101``;
:class:`BoundedDeflate` is the deflate extension that stops inflating at the message
limit. The session that follows the ``101`` is :mod:`bastion.protocol.websocket`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from typing import TYPE_CHECKING

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

from bastion.protocol.head import RequestHead

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

__all__ = [
    "BoundedDeflate",
    "Handshake",
    "HandshakeError",
    "WebSocketSettings",
    "accept_headers",
    "is_websocket_request",
    "read_handshake",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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
                # one or two digits, no leading zero (RFC 7692 7.1.2.1); 8 is legal, but
                # zlib cannot inflate raw deflate with it
                if not value.isdigit() or value[:1] == b"0" or not 9 <= int(value) <= 15:
                    return None
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
        if opcode.iscontrol():
            # A control frame may come between the fragments of a message (RFC 6455
            # 5.4): it is never compressed and leaves the message's state alone
            # (wsproto's own handling forgot that the message was compressed, so its
            # next fragments were taken as plain bytes and the inflater's window broke).
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._inbound_is_compressible = False
            return RsvBits(True, False, False)
        if self._inbound_compressed is None:
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
        if not self._inbound_is_compressible:
            return None  # a control frame: the message it may interrupt goes on
        if not fin:
            return None
        if not self._inbound_compressed:
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
