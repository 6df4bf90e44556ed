"""The bytes of an HTTP/1.1 response head and of a trailer section, checked.

The status lines and header lines :class:`~bastion.protocol.h1_exchange.H1Exchange`
writes, the headers it must see itself (framing, ``Connection``, ``Date``, ``Server``),
and :func:`prepared_head`, which checks the head of a response made the same way every
time once, so that each request only sends it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from bastion.protocol.errors import reason, status_line
from bastion.protocol.fields import InvalidField, check_header_name, check_header_value
from bastion.protocol.types import InvalidResponse

__all__ = [
    "HAS_DATE",
    "HAS_SERVER",
    "SPECIAL_HEADERS",
    "STATUS_LINES",
    "content_length_header",
    "header_lines",
    "prepared_head",
    "status_line_checked",
    "trailer_section",
]

# what a response's own headers tell the exchange (bits of one int per response)
HAS_DATE: Final = 1
HAS_SERVER: Final = 2
SPECIAL_HEADERS: Final = {
    b"content-length": 4,
    b"transfer-encoding": 8,
    b"connection": 16,
    b"date": HAS_DATE,
    b"server": HAS_SERVER,
}

STATUS_LINES: Final = {s: status_line(s) for s in range(200, 600) if reason(s)}
_cl_headers: Final[dict[int, bytes]] = {}


def status_line_checked(status: object) -> bytes:
    """The status line of a final response; InvalidResponse for anything else."""
    if not isinstance(status, int) or not 100 <= status <= 999:
        raise InvalidResponse(f"invalid status {status!r}")
    if status < 200:
        raise InvalidResponse(f"informational status {status} cannot be a final response")
    return status_line(status)


def content_length_header(n: int) -> bytes:
    """``content-length: n`` (the lines of lengths below 64 KiB made once)."""
    line = _cl_headers.get(n)
    if line is None:
        line = b"content-length: %d\r\n" % n
        if n < 65536 and len(_cl_headers) < 4096:
            _cl_headers[n] = line
    return line


def prepared_head(status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The status line and header lines of a response made the same way every time (a
    fixed response's), checked once, for ``H1Exchange.start_prepared``; None when a
    header is one the exchange must see (framing, Connection, Date, Server) or the
    status is not a plain final one."""
    line = STATUS_LINES.get(status)
    if line is None:
        return None
    out = [line]
    try:
        for name, value in headers:
            if check_header_name(name) in SPECIAL_HEADERS:
                return None
            check_header_value(name, value)
            out += (name, b": ", value, b"\r\n")
    except InvalidField:
        return None  # start_response refuses it on each request, as for any handler
    return b"".join(out)


def header_lines(headers: Iterable[Any], out: list[bytes]) -> None:
    """Append checked ``name: value`` lines (for 1xx and 101 heads, no framing rules)."""
    for item in headers:
        name, value = item
        check_header_name(name)
        check_header_value(name, value)
        out += (name, b": ", value, b"\r\n")


def trailer_section(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The last chunk with ``trailers`` (checked like header fields)."""
    out = [b"0\r\n"]
    for name, value in trailers:
        check_header_name(name)
        check_header_value(name, value)
        out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)
