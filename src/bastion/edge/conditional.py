"""Validators and conditional requests for static files (RFC 9110 §8.8 and §13).

A file's validators are its strong ``ETag`` (made from size, modification time in
nanoseconds and inode, so any change on disk gives a new one) and its ``Last-Modified``
date. :func:`evaluate` applies the request's preconditions in the order RFC 9110 §13.2.2
prescribes and says whether to answer normally, with 304 Not Modified or with 412
Precondition Failed. :func:`if_range_matches` decides whether a ``Range`` still applies.
"""

from __future__ import annotations

import calendar
import re
import time
from email.utils import formatdate, parsedate_tz
from typing import Final

__all__ = [
    "NOT_MODIFIED",
    "PRECONDITION_FAILED",
    "PROCEED",
    "evaluate",
    "http_date",
    "if_range_matches",
    "make_etag",
    "parse_http_date",
]

PROCEED: Final = 0
NOT_MODIFIED: Final = 304
PRECONDITION_FAILED: Final = 412

_TAG: Final = re.compile(rb'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_dates: Final[dict[bytes, int | None]] = {}


def make_etag(size: int, mtime_ns: int, ino: int, coding: str = "") -> bytes:
    """A strong entity tag for one file; ``coding`` tells precompressed variants apart."""
    tag = b'"%x-%x-%x' % (size, mtime_ns, ino)
    if coding:
        tag += b"-" + coding.encode("ascii")
    return tag + b'"'


def http_date(seconds: float) -> bytes:
    """An IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return formatdate(seconds, usegmt=True).encode("ascii")


def parse_http_date(value: bytes) -> int | None:
    """Seconds since the epoch for an HTTP date (any of the three RFC 9110 forms), or None.

    Results are remembered (bounded): clients repeat the same few dates.
    """
    try:
        return _dates[value]
    except KeyError:
        pass
    parsed = None
    try:
        tup = parsedate_tz(value.decode("latin-1"))
    except (ValueError, IndexError, TypeError):
        tup = None
    if tup is not None and tup[9] in (0, None):
        try:
            parsed = calendar.timegm(tup[:6])
        except (ValueError, OverflowError):
            parsed = None
    if len(_dates) < 1024:
        _dates[value] = parsed
    return parsed


def _tags(header: bytes) -> list[tuple[bool, bytes]] | None:
    """The entity tags of an If-Match / If-None-Match list as (weak, opaque), or None if
    the list is malformed."""
    out: list[tuple[bool, bytes]] = []
    pos = 0
    n = len(header)
    while pos < n:
        m = _TAG.match(header, pos)
        if m is None:
            if header[pos:].strip(b" \t,") == b"":
                break
            return None
        out.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return out


def _match_any(header: bytes, etag: bytes, *, weak: bool) -> bool:
    """Whether ``etag`` (ours, strong) matches the list in ``header``."""
    value = header.strip()
    if value == b"*":
        return True
    if value == etag:
        return True
    tags = _tags(value)
    if not tags:
        return False
    return any(opaque == etag and (weak or not is_weak) for is_weak, opaque in tags)


def evaluate(
    method: str,
    etag: bytes,
    mtime: int,
    if_match: bytes | None,
    if_unmodified_since: bytes | None,
    if_none_match: bytes | None,
    if_modified_since: bytes | None,
) -> int:
    """Apply the preconditions (RFC 9110 §13.2.2) to a file that exists.

    ``mtime`` is the file's modification time in whole seconds. Returns :data:`PROCEED`,
    :data:`NOT_MODIFIED` or :data:`PRECONDITION_FAILED`.
    """
    if if_match is not None:
        if not _match_any(if_match, etag, weak=False):
            return PRECONDITION_FAILED
    elif if_unmodified_since is not None:
        since = parse_http_date(if_unmodified_since)
        if since is not None and mtime > since:
            return PRECONDITION_FAILED
    if if_none_match is not None:
        if _match_any(if_none_match, etag, weak=True):
            return NOT_MODIFIED if method in ("GET", "HEAD") else PRECONDITION_FAILED
    elif if_modified_since is not None and method in ("GET", "HEAD"):
        since = parse_http_date(if_modified_since)
        # a date in the future is invalid (RFC 9110 §13.1.3): ignore it
        if since is not None and mtime <= since <= time.time():
            return NOT_MODIFIED
    return PROCEED


def if_range_matches(value: bytes, etag: bytes, last_modified: bytes) -> bool:
    """Whether an ``If-Range`` value still names this representation (RFC 9110 §13.1.5).

    An entity tag must match strongly; a date must equal ``Last-Modified`` exactly.
    """
    value = value.strip()
    if value.startswith(b'"'):
        return value == etag
    if value.startswith(b"W/"):
        return False
    return value == last_modified
