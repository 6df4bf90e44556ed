"""The framing rules of an HTTP/1.x request head (RFC 9112 §6, §3.2, RFC 9110 §10.1.1).

Which headers say how long the body is, whether they agree, and whether the request can
be served at all: what makes a request ambiguous is decided here, so that no ambiguous
request reaches a handler. :class:`~bastion.protocol.http1.HTTP1Protocol` feeds the
headers that matter and turns a :class:`Reject` into an error response.
"""

from __future__ import annotations

import re

import httptools

_TE_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*;[ \t]*[^,]*)?")
DIGITS = re.compile(rb"[0-9]+")

# Lower-cased names of the headers these rules look at; the others pass unexamined. Host
# is counted by the reader itself (every request has one: no object for it).
FRAMING_HEADERS = frozenset({b"transfer-encoding", b"content-length", b"expect"})


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


def absolute_target(url: bytes) -> tuple[bytes, bytes]:
    """(path, query) of a request target that does not start with "/"."""
    if url == b"*":
        return b"*", b""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise Reject(400, "malformed request target") from None
    return parsed.path or b"/", parsed.query or b""


def parser_error_status(message: str, te: bytes | None) -> int:
    """The status for an error the parser itself found (``message`` is its text)."""
    if "Invalid HTTP version" in message:
        return 505
    if te is not None and "Transfer-Encoding" in message and "Content-Length" not in message:
        return te_status(te) or 400
    return 400
