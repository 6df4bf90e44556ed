"""Preconditions for static files: RFC 9110 §13.2.2 order, entity-tag lists, dates."""

from __future__ import annotations

import pytest

from bastion.edge.conditional import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    PROCEED,
    evaluate,
    http_date,
    if_range_matches,
    make_etag,
    parse_http_date,
)

ETAG = make_etag(12, 1_700_000_000_123_456_789, 42)
MTIME = 1_700_000_000
LM = http_date(MTIME)
EARLIER = http_date(MTIME - 10)


def ev(method: str = "GET", **h: bytes) -> int:
    return evaluate(
        method,
        ETAG,
        MTIME,
        h.get("im"),
        h.get("ius"),
        h.get("inm"),
        h.get("ims"),
    )


def test_etag_is_strong_quoted_and_differs_per_coding() -> None:
    assert ETAG.startswith(b'"') and ETAG.endswith(b'"') and not ETAG.startswith(b"W/")
    assert make_etag(12, 1, 42, "br") != make_etag(12, 1, 42, "gzip") != make_etag(12, 1, 42)
    assert make_etag(12, 1, 42) != make_etag(12, 2, 42) != make_etag(13, 2, 42)


def test_no_preconditions_proceed() -> None:
    assert ev() == PROCEED


@pytest.mark.parametrize(
    "inm",
    [ETAG, b"*", b'"x", ' + ETAG, b"W/" + ETAG, b'"a" ,W/' + ETAG + b' , "b"'],
)
def test_if_none_match_weak_comparison_gives_304(inm: bytes) -> None:
    assert ev(inm=inm) == NOT_MODIFIED
    assert ev("HEAD", inm=inm) == NOT_MODIFIED


@pytest.mark.parametrize("inm", [b'"other"', b'W/"other", "x"', b"garbage", b""])
def test_if_none_match_mismatch_proceeds(inm: bytes) -> None:
    assert ev(inm=inm) == PROCEED


def test_if_none_match_on_other_methods_is_412() -> None:
    assert ev("POST", inm=ETAG) == PRECONDITION_FAILED


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    assert ev(inm=b'"other"', ims=LM) == PROCEED
    assert ev(inm=ETAG, ims=EARLIER) == NOT_MODIFIED


def test_if_modified_since() -> None:
    assert ev(ims=LM) == NOT_MODIFIED
    assert ev(ims=http_date(MTIME + 5)) == NOT_MODIFIED
    assert ev(ims=EARLIER) == PROCEED
    assert ev(ims=b"not a date") == PROCEED
    assert ev(ims=http_date(4_000_000_000)) == PROCEED  # in the future: invalid, ignored
    assert ev("POST", ims=LM) == PROCEED  # only GET and HEAD


@pytest.mark.parametrize("im", [ETAG, b"*", b'"x", ' + ETAG])
def test_if_match_strong_match_proceeds(im: bytes) -> None:
    assert ev(im=im) == PROCEED


@pytest.mark.parametrize("im", [b'"x"', b"W/" + ETAG, b"junk"])
def test_if_match_mismatch_is_412(im: bytes) -> None:
    assert ev(im=im) == PRECONDITION_FAILED


def test_if_unmodified_since() -> None:
    assert ev(ius=LM) == PROCEED
    assert ev(ius=EARLIER) == PRECONDITION_FAILED
    assert ev(ius=b"garbage") == PROCEED  # invalid date: ignored
    assert ev(im=ETAG, ius=EARLIER) == PROCEED  # If-Match wins


def test_412_wins_over_304() -> None:
    assert ev(im=b'"x"', inm=ETAG) == PRECONDITION_FAILED


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sunday, 06-Nov-94 08:49:37 GMT",
        b"Sun Nov  6 08:49:37 1994",
    ],
)
def test_three_date_forms(value: bytes) -> None:
    assert parse_http_date(value) == 784111777


def test_http_date_round_trip() -> None:
    assert http_date(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(LM) == MTIME


def test_if_range() -> None:
    assert if_range_matches(ETAG, ETAG, LM)
    assert not if_range_matches(b"W/" + ETAG, ETAG, LM)
    assert not if_range_matches(b'"other"', ETAG, LM)
    assert if_range_matches(LM, ETAG, LM)
    assert not if_range_matches(EARLIER, ETAG, LM)
