"""Range header parsing and multipart/byteranges layout."""

from __future__ import annotations

import pytest

from bastion.edge.ranges import MAX_RANGES, multipart_layout, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"bytes=0-4", [(0, 4)]),
        (b"bytes=5-", [(5, 99)]),
        (b"bytes=-10", [(90, 99)]),
        (b"bytes=-1000", [(0, 99)]),
        (b"bytes=90-1000", [(90, 99)]),
        (b"bytes=0-0,-1", [(0, 0), (99, 99)]),
        (b"bytes= 0-1 , 10-11 ", [(0, 1), (10, 11)]),
        (b"BYTES=0-1", [(0, 1)]),
        (b"bytes=0-1,,5-6", [(0, 1), (5, 6)]),
        (b"bytes=200-300,0-1", [(0, 1)]),  # the unsatisfiable one is dropped
    ],
)
def test_satisfiable(header: bytes, expected: list[tuple[int, int]]) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", [b"bytes=100-", b"bytes=100-200", b"bytes=-0", b"bytes=500-,600-"]
)
def test_unsatisfiable(header: bytes) -> None:
    assert parse_range(header, 100) == []


def test_empty_file_has_no_satisfiable_range() -> None:
    assert parse_range(b"bytes=0-", 0) == []
    assert parse_range(b"bytes=-5", 0) == []


@pytest.mark.parametrize(
    "header",
    [
        b"items=0-1",
        b"bytes",
        b"bytes=",
        b"bytes=abc",
        b"bytes=5-1",  # last before first: invalid, whole header ignored
        b"bytes=-",
        b"bytes=1-2-3",
        b"bytes=0-10,5-20",  # overlapping
        b"bytes=0-,0-",  # overlapping
        b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(MAX_RANGES + 1)),
    ],
)
def test_ignored(header: bytes) -> None:
    assert parse_range(header, 100) is None


def test_max_ranges_is_allowed() -> None:
    header = b"bytes=" + b",".join(b"%d-%d" % (2 * i, 2 * i) for i in range(MAX_RANGES))
    assert parse_range(header, 100) is not None


def test_multipart_layout_length_matches_body() -> None:
    data = bytes(range(100))
    layout = multipart_layout([(0, 4), (50, 59)], 100, b"text/plain")
    body = b"".join(h + data[a : b + 1] for h, a, b in layout.parts) + layout.tail
    assert len(body) == layout.length
    assert layout.content_type.startswith(b"multipart/byteranges; boundary=")
    boundary = layout.content_type.split(b"=", 1)[1]
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    assert b"content-range: bytes 50-59/100\r\n" in body
