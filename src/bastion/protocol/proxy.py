"""The PROXY protocol (HAProxy's, versions 1 and 2) on listeners that expect it.

A load balancer that passes TCP through (HAProxy, AWS NLB, ...) cannot add headers to
the request; instead it sends, before the connection's first byte, a PROXY header that
says whom it accepted the connection from and on which address. On a listener that
expects it, :class:`ProxyHeaderReader` is the connection's first protocol: it reads that
header (within a short deadline), then hands the transport, the bytes that came after
the header and the two addresses to the next protocol (:data:`Handoff`), and is gone.
A connection without a valid header is closed without a response: it did not come
through the balancer, and a server that answered it would let anyone pretend to be one.

The hand-off is a plain callback so that another layer can sit between the two (TLS
after the PROXY header: the callback starts TLS on the transport, then HTTP).

- v1: ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` or ``PROXY UNKNOWN ...\\r\\n``, at
  most 107 bytes;
- v2: the 12-byte signature, version 2, command LOCAL (health checks: the connection's
  own addresses) or PROXY, family UNSPEC / INET / INET6 / UNIX, addresses, then TLVs,
  which are skipped; a header longer than :data:`MAX_V2_LENGTH` is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from bastion.protocol.http1 import HTTP1Protocol

if TYPE_CHECKING:
    from bastion.config.schema import ServerConfig

__all__ = [
    "MAX_V2_LENGTH",
    "PROXY_HEADER_TIMEOUT",
    "V2_SIGNATURE",
    "Handoff",
    "ProxyError",
    "ProxyHeader",
    "ProxyHeaderReader",
    "expects_proxy",
    "handoff_to_http",
    "parse_proxy_header",
    "proxied",
]

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX: Final = 107  # the spec's bound, CRLF included
MAX_V2_LENGTH: Final = 4096  # addresses and TLVs after the 16-byte preamble
PROXY_HEADER_TIMEOUT: Final = 5.0  # seconds to receive the whole header

Client = tuple[str, int]
Server = tuple[str, int | None]
#: (transport, the bytes that came after the header, the header)
Handoff = Callable[[asyncio.Transport, bytes, "ProxyHeader"], None]


class ProxyError(ValueError):
    """Not a valid PROXY header."""


class ProxyHeader:
    """A parsed header: its length and the two addresses it carries.

    ``local``: it carries none (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC); the connection's own
    addresses stand. Otherwise ``client`` is the balancer's client (None for a Unix
    socket peer, which has no address) and ``server`` the address it accepted on.
    """

    __slots__ = ("client", "length", "local", "server")

    def __init__(
        self, length: int, client: Client | None = None, server: Server | None = None
    ) -> None:
        self.length = length
        self.client = client
        self.server = server
        self.local = client is None and server is None

    def __repr__(self) -> str:
        return f"<ProxyHeader {self.length} bytes client={self.client} server={self.server}>"


def handoff_to_http(make: Callable[[], HTTP1Protocol]) -> Handoff:
    """The hand-off to a new HTTP/1 connection: it sees the header's addresses as its
    own, and the bytes that followed the header as its first."""

    def handoff(transport: asyncio.Transport, rest: bytes, header: ProxyHeader) -> None:
        proto = make()
        if not header.local:
            # before connection_made, so that per-client limits count the real client
            proto.client = header.client
            proto.server = header.server
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if rest:
            proto.data_received(rest)

    return handoff


def _v1_port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[:1] == b"0"):
        raise ProxyError(f"bad port {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyError(f"bad port {text!r}")
    return port


def _v1_addr(text: bytes, version: int) -> str:
    try:
        addr = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyError(f"bad address {text!r}") from None
    if addr.version != version:
        raise ProxyError(f"{text!r} is not an IPv{version} address")
    return str(addr)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or data.find(b"\n") >= 0:
            raise ProxyError("PROXY v1 line not ended by CRLF within 107 bytes")
        return None
    parts = data[:end].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader(end + 2, None, None)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyError("expected PROXY TCP4|TCP6 SRC DST SPORT DPORT or PROXY UNKNOWN")
    version = 4 if parts[1] == b"TCP4" else 6
    src, dst = _v1_addr(parts[2], version), _v1_addr(parts[3], version)
    return ProxyHeader(end + 2, (src, _v1_port(parts[4])), (dst, _v1_port(parts[5])))


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    ver_cmd, fam, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"PROXY v2: version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyError(f"PROXY v2: command {command}")
    if length > MAX_V2_LENGTH:
        raise ProxyError(f"PROXY v2: {length} bytes of addresses and TLVs (limit {MAX_V2_LENGTH})")
    if len(data) < 16 + length:
        return None
    total = 16 + length
    body = data[16:total]
    if command == 0:  # LOCAL: the balancer's own connection (a health check)
        return ProxyHeader(total, None, None)
    family, transport = fam >> 4, fam & 0x0F
    if transport > 2 or family > 3:
        raise ProxyError(f"PROXY v2: family byte {fam:#04x}")
    if family == 0 or transport == 0:  # UNSPEC: addresses unknown, use the connection's
        return ProxyHeader(total, None, None)
    if family == 1:
        if length < 12:
            raise ProxyError("PROXY v2: short IPv4 addresses")
        src4, dst4 = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        sport, dport = struct.unpack_from("!HH", body, 8)
        return ProxyHeader(total, (str(src4), sport), (str(dst4), dport))
    if family == 2:
        if length < 36:
            raise ProxyError("PROXY v2: short IPv6 addresses")
        src6, dst6 = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        sport, dport = struct.unpack_from("!HH", body, 32)
        return ProxyHeader(total, (str(src6), sport), (str(dst6), dport))
    if length < 216:
        raise ProxyError("PROXY v2: short UNIX addresses")
    dst_path = body[108:216].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
    return ProxyHeader(total, None, (dst_path, None))  # a Unix peer has no address


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The PROXY header at the start of ``data``; None if more bytes are needed.

    Raises :class:`ProxyError` if ``data`` does not start with a valid header.
    """
    if data[:1] == b"P":
        if data[:6] != b"PROXY "[: len(data)]:
            raise ProxyError("not a PROXY header")
        if len(data) < 6:
            return None
        return _parse_v1(data)
    if data[:1] == b"\r":
        if V2_SIGNATURE[: len(data)] != data[:12]:
            raise ProxyError("not a PROXY v2 signature")
        return _parse_v2(data)
    if not data:
        return None
    raise ProxyError("no PROXY header")


def expects_proxy(server: ServerConfig, bind: str, redirect: bool = False) -> bool:
    """Whether connections to the listener of ``bind`` (its ``server.bind`` text, or its
    ``tls.redirect_bind`` text with ``redirect``) start with a PROXY header. ``"*"``
    stands for every ``server.bind`` listener; a redirect listener is named itself."""
    entries = [e.strip() for e in server.proxy_protocol]
    return ("*" in entries and not redirect) or bind.strip() in entries


def proxied(make: Callable[[], HTTP1Protocol], expect: bool) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of a listener: ``make`` itself, or, on a listener that expects
    a PROXY header, a reader of that header that hands over to ``make()``."""
    if not expect:
        return make
    then = handoff_to_http(make)
    return lambda: ProxyHeaderReader(then)


class ProxyHeaderReader(asyncio.Protocol):
    """A connection's first protocol on a listener that expects a PROXY header."""

    def __init__(self, then: Handoff, timeout: float = PROXY_HEADER_TIMEOUT) -> None:
        self._then = then
        self._timeout = timeout
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._refuse()

    def _refuse(self) -> None:
        transport = self._transport
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if transport is not None:
            transport.abort()  # no response: the peer did not speak PROXY

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._buffer += data
        try:
            header = parse_proxy_header(self._buffer)
        except ProxyError:
            self._refuse()
            return
        if header is None:
            return
        rest = self._buffer[header.length :]
        self._buffer = b""
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._then(transport, rest, header)

    def eof_received(self) -> bool | None:
        self._refuse()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
