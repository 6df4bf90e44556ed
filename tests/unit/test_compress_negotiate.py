"""Accept-Encoding negotiation: q-values, wildcards, identity, ties."""

from __future__ import annotations

import pytest

from bastion.edge.negotiate import EncodingChooser, choose_encoding, parse_accept_encoding

ALL = ("zstd", "br", "gzip")


@pytest.mark.parametrize(
    ("header", "available", "expected"),
    [
        # no header, empty header: identity
        (b"", ALL, None),
        (b" ", ALL, None),
        # a single coding
        (b"gzip", ALL, "gzip"),
        (b"br", ALL, "br"),
        (b"zstd", ALL, "zstd"),
        (b"GZIP", ALL, "gzip"),
        (b"x-gzip", ALL, "gzip"),
        # what browsers send: ties go to the server's order
        (b"gzip, deflate, br, zstd", ALL, "zstd"),
        (b"gzip, deflate, br", ALL, "br"),
        (b"gzip, deflate, br, zstd", ("gzip", "br", "zstd"), "gzip"),
        # q-values beat the server's order
        (b"zstd;q=0.5, br;q=0.8, gzip;q=0.9", ALL, "gzip"),
        (b"gzip;q=0.9, br", ALL, "br"),
        (b"br;q=0.999, gzip;q=1.0", ALL, "gzip"),
        (b"gzip ; q=0.5 , br ; q = 0.6", ALL, "br"),
        (b"gzip;Q=0.2, br;q=0.1", ALL, "gzip"),
        # q=0 excludes
        (b"gzip;q=0", ALL, None),
        (b"gzip;q=0.000, br", ALL, "br"),
        (b"zstd;q=0, br;q=0, gzip", ALL, "gzip"),
        # only codings we can produce count
        (b"deflate, compress", ALL, None),
        (b"br", ("gzip",), None),
        # wildcard
        (b"*", ALL, "zstd"),
        (b"*;q=0.5", ("gzip",), "gzip"),
        (b"*;q=0", ALL, None),
        (b"zstd;q=0, *", ALL, "br"),
        (b"gzip, *;q=0", ALL, "gzip"),
        (b"br;q=0.4, *;q=0.5", ALL, "zstd"),
        # identity
        (b"identity", ALL, None),
        (b"identity;q=1, gzip;q=0.5", ALL, None),
        (b"identity;q=0.5, gzip", ALL, "gzip"),
        (b"identity, gzip", ALL, "gzip"),  # equal: compressing is the point
        (b"identity;q=0, gzip", ALL, "gzip"),
        (b"identity;q=0", ALL, None),
        # malformed weights exclude that member only
        (b"gzip;q=abc, br", ALL, "br"),
        (b"gzip;q=nan", ALL, None),
        (b"gzip;q=-1", ALL, None),
        (b"gzip;q=5", ALL, "gzip"),  # clamped to 1
        (b",,gzip,,", ALL, "gzip"),
        (b"gzip;level=9", ALL, "gzip"),
        # the same coding twice keeps its best weight
        (b"gzip;q=0, gzip;q=0.5", ALL, "gzip"),
    ],
)
def test_choose_encoding(header: bytes, available: tuple[str, ...], expected: str | None) -> None:
    assert choose_encoding(header, available) == expected


def test_parse_accept_encoding() -> None:
    assert parse_accept_encoding(b"gzip;q=0.5, BR, x-gzip;q=0.2, *;q=0") == {
        "gzip": 0.5,
        "br": 1.0,
        "*": 0.0,
    }


def test_chooser_caches_and_is_bounded() -> None:
    chooser = EncodingChooser(["br", "gzip"])
    assert chooser.available == ("br", "gzip")
    assert chooser(b"gzip, br") == "br"
    assert chooser(b"gzip, br") == "br"
    assert chooser(b"gzip") == "gzip"
    assert chooser(b"deflate") is None
    for i in range(EncodingChooser.MAX_CACHED * 2):
        assert chooser(b"gzip;q=0.%d" % (i % 10 + 1) + b", x%d" % i) == "gzip"
    assert len(chooser._cache) <= EncodingChooser.MAX_CACHED
