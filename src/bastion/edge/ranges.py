"""Byte ranges (RFC 9110 §14): parsing ``Range`` and laying out 206 responses.

:func:`parse_range` turns a ``Range`` header into the byte ranges to send, an empty list
when none of them can be satisfied (416), or ``None`` when the header is to be ignored
and the whole file sent (a unit other than ``bytes``, bad syntax, or a request that looks
like abuse: more than :data:`MAX_RANGES` ranges, or ranges that overlap - the same
protection as nginx's ``max_ranges`` and Apache's overlap check).

:func:`multipart_layout` prepares a ``multipart/byteranges`` body: the head of each part
and the total length, so the response can declare its Content-Length before sending.
"""

from __future__ import annotations

import itertools
import os
import re

__all__ = ["MAX_RANGES", "Multipart", "content_range", "multipart_layout", "parse_range"]

MAX_RANGES = 16  # more than this in one request is ignored (whole file, status 200)

_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")
BOUNDARY = os.urandom(12).hex().encode("ascii")  # per worker; never in a header we send


def parse_range(value: bytes, size: int) -> list[tuple[int, int]] | None:
    """The ranges ``(first, last)`` (inclusive) to send for a file of ``size`` bytes.

    ``None``: ignore the header and send the whole file. ``[]``: nothing satisfiable
    (answer 416).
    """
    text = value.decode("latin-1")
    unit, eq, specs = text.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    items = specs.split(",")
    if len(items) > MAX_RANGES:
        return None
    out: list[tuple[int, int]] = []
    seen = 0
    for item in items:
        if not item.strip():
            continue  # empty list members are allowed by the list syntax
        m = _SPEC.fullmatch(item)
        if m is None:
            return None
        first_s, last_s = m.group(1), m.group(2)
        seen += 1
        if first_s:
            first = int(first_s)
            last = int(last_s) if last_s else size - 1
            if last_s and last < first:
                return None  # invalid: the whole header is ignored (RFC 9110 §14.1.1)
            if first >= size:
                continue  # unsatisfiable on its own
            out.append((first, min(last, size - 1)))
        elif last_s:
            suffix = int(last_s)
            if suffix == 0 or size == 0:
                continue
            out.append((max(0, size - suffix), size - 1))
        else:
            return None  # "-" alone
    if seen == 0:
        return None
    if len(out) > 1:
        ordered = sorted(out)
        for (_, prev_last), (first, _) in itertools.pairwise(ordered):
            if first <= prev_last:
                return None  # overlapping ranges: send the whole file once instead
    return out


def content_range(first: int, last: int, size: int) -> bytes:
    return b"bytes %d-%d/%d" % (first, last, size)


class Multipart:
    """The layout of a ``multipart/byteranges`` body."""

    __slots__ = ("content_type", "length", "parts", "tail")

    def __init__(
        self, content_type: bytes, parts: list[tuple[bytes, int, int]], tail: bytes, length: int
    ) -> None:
        self.content_type = content_type  # the response's Content-Type, with the boundary
        self.parts = parts  # (part head, first, last) in request order
        self.tail = tail  # the closing delimiter
        self.length = length  # the whole body's length


def multipart_layout(ranges: list[tuple[int, int]], size: int, part_type: bytes) -> Multipart:
    parts: list[tuple[bytes, int, int]] = []
    length = 0
    for i, (first, last) in enumerate(ranges):
        head = b"".join(
            (
                b"\r\n" if i else b"",
                b"--",
                BOUNDARY,
                b"\r\ncontent-type: ",
                part_type,
                b"\r\ncontent-range: ",
                content_range(first, last, size),
                b"\r\n\r\n",
            )
        )
        parts.append((head, first, last))
        length += len(head) + last - first + 1
    tail = b"\r\n--" + BOUNDARY + b"--\r\n"
    length += len(tail)
    return Multipart(b"multipart/byteranges; boundary=" + BOUNDARY, parts, tail, length)
