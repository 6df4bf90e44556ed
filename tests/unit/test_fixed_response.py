"""A ``return`` route's response: the head checked once at start-up (``prepared``) gives
the same bytes as the one checked on every request."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from bastion.edge.respond import FixedResponse
from bastion.edge.types import RouteMatch
from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.h1_head import prepared_head
from tests.unit.h1_harness import make_conn

MATCH = RouteMatch(0, {}, "/")


class Wrapped:
    """An exchange as a response filter presents it: not the connection's own."""

    def __init__(self, inner: H1Exchange) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def serve(handler: FixedResponse, request: bytes, wrap: bool) -> bytes:
    def route(ex: H1Exchange) -> None:
        handler(Wrapped(ex) if wrap else ex, MATCH)  # type: ignore[arg-type]

    proto, transport, _ = make_conn(route)
    proto.data_received(request)
    for _ in range(5):
        await asyncio.sleep(0)
    return transport.take()


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST"])
@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (200, ()),
        (201, (("X-Tag", "a"), ("Cache-Control", "no-store"))),
        (204, ()),
        (418, (("Server", "teapot"),)),  # a header the exchange must see: not prepared
        (200, (("Connection", "close"),)),
    ],
)
def test_prepared_head_sends_what_start_response_sends(
    method: bytes, status: int, headers: tuple[tuple[str, str], ...]
) -> None:
    handler = FixedResponse(status, b"hello\n", "text/plain", headers)
    request = method + b" / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    native = asyncio.run(serve(handler, request, wrap=False))
    generic = asyncio.run(serve(handler, request, wrap=True))
    # (the two may be a second apart: their Date lines are compared by shape only)
    assert re.sub(rb"date: [^\r]*", b"date: -", native) == re.sub(
        rb"date: [^\r]*", b"date: -", generic
    )
    assert native.startswith(b"HTTP/1.1 %d " % status)
    assert native.count(b"\r\ndate: ") == 1
    if method != b"HEAD" and status != 204:
        assert native.endswith(b"\r\n\r\nhello\n")
        assert b"content-length: 6\r\n" in native


def test_prepared_head_is_none_where_the_exchange_must_see_a_header() -> None:
    assert prepared_head(200, [(b"content-type", b"text/plain")]) == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
    )
    for name in (b"Content-Length", b"transfer-encoding", b"Connection", b"date", b"Server"):
        assert prepared_head(200, [(name, b"x")]) is None
    assert prepared_head(200, [(b"x-bad", b"a\r\nb")]) is None  # refused per request
    assert prepared_head(103, []) is None
    assert prepared_head(200, [(b"X-Tag", b"a")]) == b"HTTP/1.1 200 OK\r\nX-Tag: a\r\n"
