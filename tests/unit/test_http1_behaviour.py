"""HTTP/1.1 connection behaviour against a fake transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.types import InvalidResponse
from tests.unit.h1_harness import (
    FakeTransport,
    answer_when,
    echo_handler,
    hello_handler,
    make_conn,
    parse_responses,
    settle,
)


def run(coro: Any) -> None:
    asyncio.run(coro)


def test_keep_alive_serves_several_requests_in_order() -> None:
    async def main() -> None:
        proto, transport, tracker = make_conn(hello_handler)
        for i in range(3):
            proto.data_received(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            await settle()
        responses = parse_responses(transport.take())
        assert [r[2] for r in responses] == [b"GET /0", b"GET /1", b"GET /2"]
        assert not transport.closed
        assert tracker.requests_served == 3
        for _, headers, _ in responses:
            assert headers["server"] == "bastion"
            assert headers["date"].endswith("GMT")

    run(main())


def test_pipelined_requests_answered_in_order_even_when_first_is_slow() -> None:
    async def main() -> None:
        release = asyncio.Event()

        def handler(ex: H1Exchange) -> None:
            if ex.head.path == "/slow":
                answer_when(release, ex)
            else:
                hello_handler(ex)

        proto, transport, _ = make_conn(handler)
        proto.data_received(
            b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /fast1 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /fast2 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        await settle()
        assert transport.take() == b""  # nothing may overtake the slow response
        assert transport.reading_paused  # a pipelining client cannot queue without bound
        release.set()
        await settle()
        responses = parse_responses(transport.take())
        assert [r[2] for r in responses] == [b"GET /slow", b"GET /fast1", b"GET /fast2"]
        assert not transport.reading_paused

    run(main())


def test_request_body_content_length_split_across_packets() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(echo_handler)
        proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        await settle()
        proto.data_received(b"world")
        await settle()
        [(status, _, body)] = parse_responses(transport.take())
        assert (status, body) == (200, b"helloworld")

    run(main())


def test_chunked_request_body_with_extensions_and_trailers() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(echo_handler)
        proto.data_received(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        await settle()
        [(status, _, body)] = parse_responses(transport.take())
        assert (status, body) == (200, b"hello world")

    run(main())


def test_backpressure_pauses_reading_until_the_handler_consumes() -> None:
    async def main() -> None:
        exchanges: list[H1Exchange] = []

        def handler(ex: H1Exchange) -> None:
            exchanges.append(ex)

        proto, transport, _ = make_conn(handler)
        size = 4 * 1024 * 1024
        proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        await settle()
        [ex] = exchanges
        block = b"x" * 65536
        proto.data_received(block)
        data, more = await ex.receive_body()  # switches the exchange to streaming
        assert more and data == block
        sent = len(block)
        while not transport.reading_paused and sent < size:
            proto.data_received(block)
            sent += len(block)
        assert transport.reading_paused, "reading was never paused"
        assert sent < size
        received = len(block)
        while received < sent:
            data, more = await ex.receive_body()
            received += len(data)
        assert not transport.reading_paused

    run(main())


def test_streaming_response_is_chunked_on_http11_and_close_delimited_on_http10() -> None:
    def handler(ex: H1Exchange) -> None:
        ex.start_response(200, [(b"content-type", b"text/plain")])
        ex.write(b"one ")
        ex.write(b"two ")
        ex.finish(b"three")

    async def main() -> None:
        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        raw = transport.take()
        assert b"transfer-encoding: chunked" in raw
        [(status, _, body)] = parse_responses(raw)
        assert body == b"one two three"
        assert not transport.closed

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.0\r\n\r\n")
        await settle()
        raw = transport.take()
        assert b"transfer-encoding" not in raw
        assert raw.endswith(b"one two three")
        assert transport.done

    run(main())


def test_http10_keep_alive_when_asked() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler)
        proto.data_received(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        await settle()
        [(_, headers, _)] = parse_responses(transport.take())
        assert headers["connection"] == "keep-alive"
        assert not transport.closed
        proto.data_received(b"GET / HTTP/1.0\r\n\r\n")
        await settle()
        [(_, headers, _)] = parse_responses(transport.take())
        assert headers["connection"] == "close"
        assert transport.done

    run(main())


def test_head_gets_headers_without_body() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler)
        proto.data_received(
            b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        await settle()
        raw = transport.take()
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert b"content-length: 7" in head  # the length a GET would have had
        assert rest.startswith(b"HTTP/1.1 200 OK")  # no body bytes in between

    run(main())


def test_head_without_body_or_length_claims_no_length() -> None:
    """A HEAD answered with neither a body nor a Content-Length must not say
    ``Content-Length: 0``: that would claim GET's body is empty (RFC 9110 8.6)."""

    def handler(ex: H1Exchange) -> None:
        ex.start_response(200, [(b"content-type", b"text/plain")])
        ex.finish()

    async def main() -> None:
        proto, transport, _ = make_conn(handler)
        proto.data_received(
            b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\nGET /y HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        await settle()
        raw = transport.take()
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert b"content-length" not in head and b"transfer-encoding" not in head
        # the GET that follows, with the same handler, says its body is empty
        assert rest.startswith(b"HTTP/1.1 200 OK") and b"content-length: 0" in rest

    run(main())


def test_expect_100_continue_sent_when_body_is_read() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(echo_handler)
        proto.data_received(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        await settle()
        assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
        proto.data_received(b"hello")
        await settle()
        [(status, _, body)] = parse_responses(transport.take())
        assert (status, body) == (200, b"hello")

    run(main())


def test_no_100_continue_when_handler_answers_without_reading() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler)
        proto.data_received(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        await settle()
        raw = transport.take()
        assert b"100 Continue" not in raw
        assert raw.startswith(b"HTTP/1.1 200 OK")
        assert transport.done  # the unread body makes the framing unusable

    run(main())


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil", b"a\r\nSet-Cookie: x=1")],
        [(b"x-evil", b"a\nb")],
        [(b"x-evil", b"a\x00b")],
        [(b"x-evil\r\nx-other", b"a")],
        [(b"bad name", b"a")],
    ],
)
def test_header_injection_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    async def main() -> None:
        def handler(ex: H1Exchange) -> None:
            try:
                ex.start_response(200, headers)
            except InvalidResponse as exc:
                ex.fail(exc)
                return
            ex.finish(b"should not happen")

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        raw = transport.take()
        [(status, _, _)] = parse_responses(raw)
        assert status == 500
        assert b"Set-Cookie" not in raw and b"evil" not in raw

    run(main())


def test_handler_exception_gives_500_without_details() -> None:
    async def main() -> None:
        def handler(ex: H1Exchange) -> None:
            raise RuntimeError("secret detail")

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        raw = transport.take()
        assert raw.startswith(b"HTTP/1.1 500")
        assert b"secret" not in raw

    run(main())


def test_content_length_overrun_is_refused() -> None:
    async def main() -> None:
        errors: list[Exception] = []

        def handler(ex: H1Exchange) -> None:
            ex.start_response(200, [(b"content-length", b"3")])
            try:
                ex.write(b"toolong")
            except InvalidResponse as exc:
                errors.append(exc)
                ex.fail(exc)

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        assert errors
        assert transport.done

    run(main())


def test_disconnect_is_seen_by_the_handler() -> None:
    async def main() -> None:
        seen: list[str] = []

        def handler(ex: H1Exchange) -> None:
            async def wait() -> None:
                await ex.wait_disconnected()
                seen.append("gone")

            asyncio.get_running_loop().create_task(wait())

        proto, transport, tracker = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        proto.connection_lost(None)
        await settle()
        assert seen == ["gone"]
        assert not tracker.connections

    run(main())


def test_write_pause_blocks_drain_until_resumed() -> None:
    async def main() -> None:
        order: list[str] = []

        def handler(ex: H1Exchange) -> None:
            async def stream() -> None:
                ex.start_response(200, [])
                proto.pause_writing()  # the client stops reading
                ex.write(b"a")
                order.append("wrote")
                await ex.drain()
                order.append("drained")
                ex.finish(b"b")

            asyncio.get_running_loop().create_task(stream())

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        assert order == ["wrote"]
        proto.resume_writing()
        await settle()
        assert order == ["wrote", "drained"]

    run(main())


def test_timeouts_408_for_slow_head_and_silent_close_when_idle() -> None:
    async def main() -> None:
        proto, transport, tracker = make_conn(hello_handler, header_timeout=1.0)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n")  # never finishes
        proto.check_deadline(tracker.now + 2.0)
        await settle()
        [(status, _, _)] = parse_responses(transport.take())
        assert status == 408
        assert transport.done

        proto, transport, tracker = make_conn(hello_handler, keepalive_timeout=1.0)
        proto.check_deadline(tracker.now + 0.5)
        assert not transport.closed
        proto.check_deadline(tracker.now + 2.0)
        assert transport.done
        assert transport.take() == b""

    run(main())


def test_body_timeout_408() -> None:
    async def main() -> None:
        proto, transport, tracker = make_conn(echo_handler, body_timeout=1.0)
        proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        proto.check_deadline(tracker.now + 2.0)
        await settle()
        [(status, _, _)] = parse_responses(transport.take())
        assert status == 408
        assert transport.done

    run(main())


def test_max_keepalive_requests_closes_after_the_limit() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler, max_keepalive_requests=2)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        assert not transport.closed
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        responses = parse_responses(transport.take())
        assert responses[-1][1]["connection"] == "close"
        assert transport.done

    run(main())


def test_shutdown_closes_idle_and_finishes_busy_connections() -> None:
    async def main() -> None:
        release = asyncio.Event()

        def handler(ex: H1Exchange) -> None:
            if ex.head.path == "/quick":
                hello_handler(ex)
            else:
                answer_when(release, ex)

        from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings

        def connect() -> tuple[HTTP1Protocol, object]:
            t = FakeTransport()
            p = HTTP1Protocol(ProtocolSettings(), handler, tracker)
            t.protocol = p
            p.connection_made(t)  # type: ignore[arg-type]
            return p, t

        idle, idle_t, tracker = make_conn(handler)
        idle.data_received(b"GET /quick HTTP/1.1\r\nHost: t\r\n\r\n")  # served one: now idle
        await settle()
        fresh, fresh_t = connect()  # accepted, nothing read yet
        busy, busy_t = connect()
        busy.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        tracker.shutdown()
        await settle()
        # the idle keep-alive connection's client may be sending its next request right
        # now: it is answered (with Connection: close), and a silent one closes soon
        assert not idle_t.closed
        idle.data_received(b"GET /quick HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        [(status, headers, _)] = parse_responses(idle_t.take())[-1:]  # type: ignore[attr-defined]
        assert status == 200 and headers["connection"] == "close"
        assert idle_t.closed
        assert not busy_t.closed  # type: ignore[attr-defined]
        # a request already on its way on the fresh connection is still answered, once
        assert not fresh_t.closed  # type: ignore[attr-defined]
        fresh.data_received(b"GET /quick HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        [(status, headers, _)] = parse_responses(fresh_t.take())  # type: ignore[attr-defined]
        assert status == 200 and headers["connection"] == "close"
        release.set()
        await settle()
        [(status, headers, _)] = parse_responses(busy_t.take())  # type: ignore[attr-defined]
        assert status == 200 and headers["connection"] == "close"
        assert busy_t.closed  # type: ignore[attr-defined]
        assert await tracker.wait_closed(1.0)

    run(main())


def test_shutdown_closes_a_silent_new_connection_after_a_short_wait() -> None:
    async def main() -> None:
        proto, transport, tracker = make_conn(hello_handler)
        tracker.shutdown()
        assert not transport.closed
        proto.check_deadline(tracker.now + 1.5)
        assert transport.closed

    run(main())


def test_shutdown_closes_a_silent_keep_alive_connection_after_a_short_wait() -> None:
    async def main() -> None:
        proto, transport, tracker = make_conn(hello_handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        tracker.shutdown()
        assert not transport.closed
        proto.check_deadline(tracker.now + 0.5)
        assert not transport.closed
        proto.check_deadline(tracker.now + 1.5)
        assert transport.closed

    run(main())


def test_connection_limit_answers_503_when_nothing_idle() -> None:
    async def main() -> None:
        release = asyncio.Event()

        def handler(ex: H1Exchange) -> None:
            answer_when(release, ex)

        first, first_t, tracker = make_conn(handler, max_connections=1)
        first.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings

        second_t = type(first_t)()
        second = HTTP1Protocol(ProtocolSettings(max_connections=1), handler, tracker)
        second_t.protocol = second
        second.connection_made(second_t)  # type: ignore[arg-type]
        [(status, headers, _)] = parse_responses(second_t.take())
        assert status == 503 and "retry-after" in headers
        assert second_t.closed
        release.set()
        await settle()

    run(main())


def test_answer_without_reading_the_body_lingers_before_closing() -> None:
    async def main() -> None:
        proto, transport, tracker = make_conn(hello_handler)
        proto.data_received(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nxxxx"
        )
        await settle()
        [(status, headers, _)] = parse_responses(transport.take())
        assert status == 200 and headers["connection"] == "close"
        # half-closed, still reading so the client's upload does not trigger a reset
        assert transport.eof_written and not transport.closed
        assert not transport.reading_paused
        proto.data_received(b"y" * 65536)  # discarded
        assert transport.take() == b""
        proto.check_deadline(tracker.now + 5.0)
        assert transport.closed

    run(main())


def test_an_idle_keep_alive_connection_keeps_no_parser() -> None:
    # between requests the connection drops its parser (about 1 KB with its callbacks);
    # nothing of it may stay reachable from the connection
    import gc

    import httptools

    def parsers() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is httptools.HttpRequestParser)

    async def main() -> None:
        gc.collect()
        before = parsers()
        conns = [make_conn(hello_handler) for _ in range(20)]
        for proto, _, _ in conns:
            proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        for proto, transport, _ in conns:
            assert parse_responses(transport.take())[0][2] == b"GET /"
            assert not transport.closed  # kept alive, idle
            proto.check_deadline(asyncio.get_running_loop().time())  # the worker's tick
        gc.collect()
        assert parsers() - before < 5, "idle connections keep their parsers"
        for proto, _, _ in conns:  # and the next request makes a new one
            proto.data_received(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        for _, transport, _ in conns:
            assert parse_responses(transport.take())[0][2] == b"GET /again"

    run(main())
