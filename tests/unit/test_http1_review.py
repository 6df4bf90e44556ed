"""HTTP/1.1 connection edge cases: pipelining with bodies, slow heads, unread responses."""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.types import ClientDisconnected
from tests.unit.h1_harness import (
    answer_when,
    echo_handler,
    hello_handler,
    make_conn,
    parse_responses,
    settle,
)


def run(coro: Any) -> None:
    asyncio.run(coro)


def test_pipelined_request_body_still_arriving_is_read_once_it_is_dispatched() -> None:
    async def main() -> None:
        release = asyncio.Event()

        def handler(ex: H1Exchange) -> None:
            if ex.head.path == "/slow":
                answer_when(release, ex)
            else:
                echo_handler(ex)

        proto, transport, _ = make_conn(handler)
        proto.data_received(
            b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabc"
        )
        await settle()
        assert transport.reading_paused
        release.set()
        await settle()
        # the POST is now the active request and waits for the rest of its body
        assert not transport.reading_paused
        proto.data_received(b"def")
        await settle()
        responses = parse_responses(transport.take())
        assert [r[2] for r in responses] == [b"GET /slow", b"abcdef"]
        assert not transport.closed

    run(main())


def test_slow_head_after_a_pipelined_response_still_times_out() -> None:
    async def main() -> None:
        release = asyncio.Event()

        def handler(ex: H1Exchange) -> None:
            answer_when(release, ex)

        proto, transport, tracker = make_conn(handler, header_timeout=1.0, keepalive_timeout=1.0)
        # the start of a second request arrives while the first is being answered
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        proto.data_received(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: ")
        await settle()
        release.set()
        await settle()
        [(status, _, _)] = parse_responses(transport.take())
        assert status == 200
        assert not transport.done
        proto.data_received(b"b")  # trickled, never finished
        proto.check_deadline(tracker.now + 3.0)
        await settle()
        assert transport.done

    run(main())


def test_client_not_reading_responses_stops_the_pipeline() -> None:
    async def main() -> None:
        served: list[str] = []

        def handler(ex: H1Exchange) -> None:
            served.append(ex.head.path)
            hello_handler(ex)

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET /0 HTTP/1.1\r\nHost: t\r\n\r\n")
        await settle()
        proto.pause_writing()  # the client does not read what we send
        proto.data_received(
            b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(1, 50))
        )
        await settle()
        # nothing more is answered (and buffered) until the client reads
        assert len(served) <= 2
        assert transport.reading_paused
        proto.resume_writing()
        await settle()
        assert len(served) == 50
        assert [r[2] for r in parse_responses(transport.take())] == [
            b"GET /%d" % i for i in range(50)
        ]
        assert not transport.reading_paused

    run(main())


def test_client_closing_its_side_mid_body_is_a_disconnect_not_a_wait() -> None:
    async def main() -> None:
        seen: list[str] = []

        def handler(ex: H1Exchange) -> None:
            async def read() -> None:
                try:
                    while (await ex.receive_body())[1]:
                        pass
                except ClientDisconnected:
                    seen.append("gone")
                    ex.fail(None)
                    return
                seen.append("complete")
                hello_handler(ex)

            asyncio.get_running_loop().create_task(read())

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        await settle()
        proto.eof_received()  # the rest of the body can never come
        await settle()
        assert seen == ["gone"]
        assert transport.closed

    run(main())
