"""Status lines and the small plain-text responses the server writes by itself."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

_STATUS_LINES: Final[dict[int, bytes]] = {}
for _s in HTTPStatus:
    _STATUS_LINES[_s.value] = b"HTTP/1.1 %d %s\r\n" % (_s.value, _s.phrase.encode("ascii"))


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, precomputed for every known status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def error_response(status: int, date_header: bytes, *, retry_after: bool = False) -> bytes:
    """A complete response that closes the connection, with a one-line plain-text body."""
    body = f"{status} {reason(status)}\n".encode("ascii")
    parts = [
        status_line(status),
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        date_header,
        b"connection: close\r\n",
    ]
    if retry_after:
        parts.append(b"retry-after: 1\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)
