"""Malformed and ambiguous requests never reach the handler: status and closing."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.h1_harness import hello_handler, make_conn, parse_responses, settle

GOOD_HEAD = b"GET / HTTP/1.1\r\nHost: a\r\n"

# (name, raw request, expected status)
BAD_REQUESTS = [
    (
        "content-length with transfer-encoding",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "transfer-encoding then content-length",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "differing content-lengths",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    (
        "repeated equal content-lengths",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    ("content-length list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    ("content-length sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
    ("content-length negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("content-length hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", 400),
    ("unknown coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
    (
        "unsupported coding before chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "chunked not last",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "obfuscated coding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "space before colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "vertical tab in coding",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunked in HTTP/1.0",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "bad chunk size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk size overflow",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk size without CR",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        400,
    ),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("NUL in header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400),
    ("control char in header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400),
    ("DEL in header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n", 400),
    ("bare CR in header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400),
    ("bare LF line endings", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare CR after version", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    ("NUL in request target", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("control char in request target", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("space in header name", b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400),
    ("empty header name", b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    ("lower-case method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    ("HTTP/2.0 in an HTTP/1 head", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("HTTP/0.9", b"GET /\r\n\r\n", 505),
    ("unknown expectation", b"POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417),
    ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\nHOST: b\r\n\r\n", 400),
]


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "raw", "status"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_malformed_request_is_refused_and_closed(name: str, raw: bytes, status: int) -> None:
    calls: list[object] = []

    def handler(ex: object) -> None:
        calls.append(ex)
        hello_handler(ex)  # type: ignore[arg-type]

    async def main() -> None:
        proto, transport, _ = make_conn(handler)
        proto.data_received(raw)
        await settle()
        responses = parse_responses(transport.take())
        assert [r[0] for r in responses] == [status], name
        assert responses[0][1]["connection"] == "close"
        assert transport.done
        assert calls == [], "a refused request reached the handler"

    run(main())


def test_refusal_after_a_good_pipelined_request_keeps_order() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler)
        proto.data_received(
            GOOD_HEAD + b"\r\n" + b"GET /x HTTP/1.1\r\nHost: t\r\nX-A: b\x00\r\n\r\n"
        )
        await settle()
        responses = parse_responses(transport.take())
        assert [r[0] for r in responses] == [200, 400]
        assert responses[0][2] == b"GET /"
        assert transport.done

    run(main())


@pytest.mark.parametrize(
    ("limit", "raw", "status"),
    [
        ({"max_request_line": 100}, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        ({"max_header_count": 5}, GOOD_HEAD + b"".join(b"X-%d: y\r\n" % i for i in range(6)), 431),
        ({"max_header_size": 1000}, GOOD_HEAD + b"X-Big: " + b"y" * 2000 + b"\r\n\r\n", 431),
        ({"max_body_size": 10}, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n", 413),
    ],
    ids=["uri-414", "header-count-431", "header-size-431", "declared-body-413"],
)
def test_limits(limit: dict[str, int], raw: bytes, status: int) -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler, **limit)
        proto.data_received(raw)
        await settle()
        responses = parse_responses(transport.take())
        assert [r[0] for r in responses] == [status]
        assert transport.done

    run(main())


def test_header_limits_hold_when_the_head_arrives_in_pieces() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler, max_header_size=4096)
        proto.data_received(GOOD_HEAD)
        for _ in range(100):
            if transport.closed:
                break
            proto.data_received(b"X-Pad: " + b"p" * 100 + b"\r\n")
        await settle()
        assert [r[0] for r in parse_responses(transport.take())] == [431]
        assert transport.done

    run(main())


def test_chunked_body_over_limit_is_413() -> None:
    async def main() -> None:
        seen: list[bytes] = []

        def handler(ex: object) -> None:
            async def read() -> None:
                try:
                    while True:
                        data, more = await ex.receive_body()  # type: ignore[attr-defined]
                        seen.append(data)
                        if not more:
                            break
                except Exception:
                    seen.append(b"<disconnected>")

            asyncio.get_running_loop().create_task(read())

        proto, transport, _ = make_conn(handler, max_body_size=10)
        proto.data_received(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n"
        )
        await settle()
        proto.data_received(b"8\r\n12345678\r\n0\r\n\r\n")
        await settle()
        responses = parse_responses(transport.take())
        assert [r[0] for r in responses] == [413]
        assert transport.done
        assert seen[-1] == b"<disconnected>"

    run(main())


def test_error_response_lingers_then_closes() -> None:
    async def main() -> None:
        proto, transport, tracker = make_conn(hello_handler)
        proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n")
        await settle()
        assert transport.eof_written and not transport.closed
        assert not transport.reading_paused  # keeps draining what the client still sends
        proto.data_received(b"more junk from the client")
        assert transport.take().startswith(b"HTTP/1.1 400")
        proto.check_deadline(tracker.now + 5.0)
        assert transport.closed

    run(main())
