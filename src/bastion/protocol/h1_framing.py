"""The framing rules of an HTTP/1.x request head (RFC 9112 §6, §3.2, RFC 9110 §10.1.1).

Which headers say how long the body is, whether they agree, and whether the request can
be served at all: what makes a request ambiguous is decided here, so that no ambiguous
request reaches a handler. :class:`~bastion.protocol.http1.HTTP1Protocol` feeds the
headers that matter and turns a :class:`Reject` into an error response.
"""

from __future__ import annotations

import re
from typing import Final

_TE_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*;[ \t]*[^,]*)?")
DIGITS: Final = re.compile(rb"[0-9]+")

# Lower-cased names of the headers these rules look at; the others pass unexamined. Host
# is counted by the reader itself (every request has one: no object for it).
FRAMING_HEADERS: Final = frozenset({b"transfer-encoding", b"content-length", b"expect"})


class Reject(Exception):
    """The request is refused with ``status`` (and the connection closed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def te_status(te: bytes) -> int:
    """0 if the Transfer-Encoding is plain ``chunked``, else 400 or 501."""
    codings = [c.strip(b" \t").lower() for c in te.split(b",")]
    for c in codings:
        if not _TE_TOKEN.fullmatch(c):
            return 400  # obfuscated
    if codings == [b"chunked"]:
        return 0
    if codings[-1] != b"chunked":
        return 400  # the body length cannot be determined
    return 501  # another coding (gzip, ...) we do not decode


class FramingHeaders:
    """The framing headers of one request head, checked as they arrive."""

    __slots__ = ("cl", "expect", "te")

    def __init__(self) -> None:
        self.te: bytes | None = None
        self.cl = -1
        self.expect: bytes | None = None

    def add(self, lname: bytes, value: bytes, max_body_size: int) -> None:
        """Take one header of :data:`FRAMING_HEADERS`; raise :class:`Reject` if it cannot
        be accepted."""
        if lname == b"transfer-encoding":
            self.te = value if self.te is None else self.te + b"," + value
        elif lname == b"content-length":
            if self.cl != -1:
                raise Reject(400, "more than one content-length")
            if not DIGITS.fullmatch(value):
                raise Reject(400, "malformed content-length")
            self.cl = int(value)
            if self.cl > max_body_size:
                raise Reject(413, "request body too large")
        else:
            self.expect = value

    def check(self, version: str) -> tuple[bool, bool]:
        """Once the head is complete: (a body follows?, answer 100-continue?)."""
        te = self.te
        body_expected = self.cl > 0
        if te is not None:
            if self.cl != -1:
                raise Reject(400, "content-length with transfer-encoding")
            if version == "1.0":
                raise Reject(400, "transfer-encoding in an HTTP/1.0 request")
            status = te_status(te)
            if status:
                raise Reject(status, "unsupported transfer-encoding")
            body_expected = True
        expect_continue = False
        if self.expect is not None:
            if self.expect.lower() != b"100-continue":
                raise Reject(417, "unsupported expectation")
            expect_continue = version == "1.1" and body_expected
        return body_expected, expect_continue


# RFC 3986 3.2.2: the characters of a reg-name (unreserved, pct-encoded, sub-delims) and
# ":", each kept by this table; any other byte becomes NUL (one C call to check a Host)
_HOST_CHARS: Final = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:"
)
_HOST_TABLE: Final = bytes([c if _HOST_CHARS.find(bytes([c])) >= 0 else 0 for c in range(256)])

# framing bytes a chunk may carry beyond its data for free: the size (up to 16 hex
# digits with a few leading zeros), its line end and the line end after the data
CHUNK_FRAMING_ALLOWANCE: Final = 16
#: what a request's chunked framing (chunk extensions, mostly) may add beyond that, in
#: all: 16 KiB, as Node.js (kMaxChunkExtensionsSize) and hyper do since 2024
MAX_CHUNK_EXTENSIONS: Final = 16 * 1024


# Host values found valid, so that a site's few names are checked once (bounded).
_GOOD_HOSTS: Final[set[bytes]] = set()


def host_ok(value: bytes) -> bool:
    """Whether ``value`` is ``uri-host [ ":" port ]`` (a Host field value, RFC 9112 3.2;
    RFC 3986 3.2.2-3.2.3). An empty value is valid: the target had no authority."""
    if value in _GOOD_HOSTS:
        return True
    if _host_ok(value):
        if len(_GOOD_HOSTS) < 256:
            _GOOD_HOSTS.add(value)
        return True
    return False


def _host_ok(value: bytes) -> bool:
    if value[:1] == b"[":  # an IP-literal
        end = value.find(b"]")
        if end < 2 or value[1:end].translate(_HOST_TABLE).find(b"\x00") >= 0:
            return False
        port = value[end + 1 :]
        return not port or (port[:1] == b":" and (len(port) == 1 or port[1:].isdigit()))
    if value.translate(_HOST_TABLE).find(b"\x00") >= 0:
        return False
    colon = value.find(b":")
    if colon < 0:
        return True
    port = value[colon + 1 :]
    return not port or port.isdigit()


def absolute_target(url: bytes) -> tuple[bytes, bytes, bytes]:
    """(authority, path, query) of an absolute-form request target (RFC 9112 3.2.2): an
    ``http`` or ``https`` URI with a host and no user information. Its path is "/" when
    it has none (``http://a.example`` and ``http://a.example?x`` are valid targets)."""
    sep = url.find(b"://")
    scheme = url[:sep].lower() if sep > 0 else b""
    if scheme != b"http" and scheme != b"https":
        raise Reject(400, "malformed request target")
    start = sep + 3
    end = url.find(b"/", start)
    q = url.find(b"?", start)
    if end < 0 or 0 <= q < end:
        end = q if q >= 0 else len(url)
    authority = url[start:end]
    # RFC 9110 4.2.1: an http URI with an empty host is invalid; 4.2.4: userinfo is an error
    if (
        not authority
        or authority[:1] == b":"
        or authority.find(b"@") >= 0
        or not host_ok(authority)
    ):
        raise Reject(400, "malformed request target")
    path, _, query = url[end:].partition(b"?")
    return authority, path or b"/", query


def authority_form_ok(url: bytes) -> bool:
    """Whether ``url`` is ``uri-host ":" port`` (RFC 9112 3.2.3, CONNECT only)."""
    colon = url.rfind(b":")
    return colon > 0 and url[colon + 1 :].isdigit() and host_ok(url)


def doubled_space(data: bytes, piece: bytes, start: int) -> int:
    """Where the request target ``piece`` ends in ``data``, searching from ``start``:
    negative (``-end - 1``) if more than one space stands before or after it (RFC 9112 3:
    one SP between the parts of the request line). ``start`` is returned when it is not
    found there."""
    i = data.find(piece, start)
    while i >= 0 and (i == 0 or data[i - 1] != 0x20):
        i = data.find(piece, i + 1)
    if i < 0:
        return start
    end = i + len(piece)
    if (i > 1 and data[i - 2] == 0x20) or (
        end + 1 < len(data) and data[end] == 0x20 and data[end + 1] == 0x20
    ):
        return -end - 1
    return end


def parser_error_status(message: str, te: bytes | None) -> int:
    """The status for an error the parser itself found (``message`` is its text)."""
    if "Invalid HTTP version" in message:
        return 505
    if te is not None and "Transfer-Encoding" in message and "Content-Length" not in message:
        return te_status(te) or 400
    return 400
