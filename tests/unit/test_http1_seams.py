"""The exchange's seams: informational responses, the upgrade hand-off, read pausing by
reason, and the connection's phases — on the real HTTP/1.1 protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bastion.protocol.flow import BODY, HANDOVER, PIPELINE, Flow
from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings
from bastion.protocol.state import ConnectionTracker
from bastion.protocol.types import InvalidResponse
from tests.unit.h1_harness import echo_handler, hello_handler, make_conn, parse_responses, settle

UPGRADE = b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"


def run(coro: Any) -> None:
    asyncio.run(coro)


class EchoSession:
    """Takes the connection over: answers every byte back, upper-cased."""

    def __init__(self) -> None:
        self.flow: Flow | None = None
        self.received = b""
        self.eof = False
        self.lost = False
        self.shut = False

    def data_received(self, data: bytes) -> None:
        self.received += data
        assert self.flow is not None
        self.flow.write(data.upper())

    def eof_received(self) -> None:
        self.eof = True
        assert self.flow is not None
        self.flow.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def shutdown(self) -> None:
        self.shut = True


def switching_handler(sessions: list[EchoSession]) -> Any:
    def handler(ex: H1Exchange) -> None:
        if not ex.can_upgrade:
            hello_handler(ex)
            return
        session = EchoSession()
        sessions.append(session)
        session.flow = ex.take_over(
            101, [(b"upgrade", b"echo"), (b"connection", b"Upgrade")], session
        )

    return handler


def test_a_101_hands_the_connection_to_the_session_with_the_bytes_that_followed() -> None:
    async def main() -> None:
        sessions: list[EchoSession] = []
        proto, transport, tracker = make_conn(switching_handler(sessions))
        proto.data_received(UPGRADE + b"early")
        await settle()
        out = transport.take()
        head, _, rest = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"upgrade: echo" in head and b"content-length" not in head
        assert rest == b"EARLY"
        assert proto.phase == "UPGRADED"
        assert tracker.requests_served == 1
        proto.data_received(b"more")
        assert transport.take() == b"MORE"
        assert sessions[0].received == b"earlymore"
        # a session is not an idle HTTP connection: never reclaimed, no HTTP deadline
        assert not proto.is_idle
        proto.check_deadline(tracker.now + 3600)
        assert not transport.closed
        tracker.shutdown()
        assert sessions[0].shut and not transport.closed
        proto.eof_received()
        assert sessions[0].eof and transport.closed
        await settle()
        assert sessions[0].lost

    run(main())


def test_an_upgrade_the_handler_declines_is_plain_http_then_the_connection_closes() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler)
        proto.data_received(UPGRADE + b"not http")
        await settle()
        [(status, headers, body)] = parse_responses(transport.take())
        assert (status, body) == (200, b"GET /chat")
        assert headers["connection"] == "close"
        assert transport.closed

    run(main())


def test_take_over_is_refused_for_a_request_that_did_not_ask() -> None:
    async def main() -> None:
        errors: list[Exception] = []

        def handler(ex: H1Exchange) -> None:
            assert not ex.can_upgrade
            try:
                ex.take_over(101, [], EchoSession())
            except InvalidResponse as exc:
                errors.append(exc)
            hello_handler(ex)

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        assert len(errors) == 1
        assert parse_responses(transport.take())[0][0] == 200
        assert proto.phase == "IDLE"

    run(main())


@pytest.mark.parametrize(
    "framing, body",
    [
        (b"Content-Length: 5\r\n", b"hello"),
        (b"Transfer-Encoding: chunked\r\n", b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
    ],
)
def test_an_upgrade_request_with_a_body_keeps_its_body_and_the_stream_in_step(
    framing: bytes, body: bytes
) -> None:
    """llhttp stops at the body of a request that asks to switch; bastion parses it as
    HTTP (the switch is ignored) and the next pipelined request still arrives intact."""

    async def main() -> None:
        proto, transport, _ = make_conn(echo_handler)
        request = (
            b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n" + framing + b"\r\n" + body
        )
        proto.data_received(
            request + b"POST /next HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        )
        for _ in range(5):
            await settle()
        responses = parse_responses(transport.take())
        assert [(r[0], r[2]) for r in responses] == [(200, b"hello"), (200, b"abc")]

    run(main())


def test_early_hints_go_out_before_the_final_response_and_not_to_http10() -> None:
    async def main() -> None:
        def handler(ex: H1Exchange) -> None:
            ex.inform(103, [(b"link", b"</app.css>; rel=preload; as=style")])
            ex.start_response(200, [(b"content-type", b"text/plain")])
            ex.finish(b"ok")
            with pytest.raises(InvalidResponse):
                ex.inform(103, [])

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        out = transport.take()
        assert out.startswith(
            b"HTTP/1.1 103 Early Hints\r\nlink: </app.css>; rel=preload; as=style\r\n\r\n"
            b"HTTP/1.1 200 OK\r\n"
        )
        proto.data_received(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        await settle()
        assert transport.take().startswith(b"HTTP/1.1 200 OK\r\n")

    run(main())


@pytest.mark.parametrize(
    "status, headers",
    [(101, []), (200, []), (99, []), (103, [(b"bad name", b"x")]), (103, [(b"x", b"a\x01b")])],
)
def test_informational_responses_are_checked(status: int, headers: list[Any]) -> None:
    async def main() -> None:
        raised: list[Exception] = []

        def handler(ex: H1Exchange) -> None:
            try:
                ex.inform(status, headers)
            except InvalidResponse as exc:
                raised.append(exc)
            hello_handler(ex)

        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        assert len(raised) == 1
        assert transport.take().startswith(b"HTTP/1.1 200 OK\r\n")

    run(main())


def test_a_handler_may_send_100_continue_itself_once() -> None:
    async def main() -> None:
        def handler(ex: H1Exchange) -> None:
            ex.inform(100, [])
            ex.inform(100, [])  # already sent: ignored
            echo_handler(ex)

        proto, transport, _ = make_conn(handler)
        proto.data_received(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        await settle()
        assert transport.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
        proto.data_received(b"hi")
        await settle()
        assert parse_responses(transport.take())[0][2] == b"hi"

    run(main())


def test_a_body_is_not_read_until_its_handler_asks_for_it() -> None:
    async def main() -> None:
        held: list[H1Exchange] = []
        proto, transport, _ = make_conn(held.append)
        proto.data_received(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000
        )
        await settle()
        flow = proto.flow
        assert transport.reading_paused and flow.paused_for == BODY
        ex = held[0]
        assert ex.received == 1000
        ex.call_when_complete(lambda: None)  # the handler wants the body now
        assert not transport.reading_paused and flow.paused_for == 0

    run(main())


def test_reading_resumes_only_when_every_reason_is_gone() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler)
        flow = proto.flow
        flow.pause_reading(PIPELINE)
        flow.pause_reading(HANDOVER)
        flow.resume_reading(PIPELINE)
        assert transport.reading_paused and flow.paused_for == HANDOVER
        flow.resume_reading(BODY)  # not a reason that was given: changes nothing
        assert transport.reading_paused
        flow.resume_reading(HANDOVER)
        assert not transport.reading_paused

    run(main())


def test_phases_follow_the_request() -> None:
    async def main() -> None:
        held: list[H1Exchange] = []
        proto, transport, _ = make_conn(held.append)
        assert proto.phase == "IDLE"
        proto.data_received(b"GET / HTTP/1.1\r\nHo")
        assert proto.phase == "HEAD"
        proto.data_received(b"st: a\r\n\r\n")
        assert proto.phase == "BUSY"
        await settle()
        hello_handler(held[0])
        assert proto.phase == "IDLE"
        assert transport.take().startswith(b"HTTP/1.1 200 OK")
        proto.data_received(b"GET / HTTP/9.9\r\n\r\n")
        assert proto.phase == "LINGERING"
        assert transport.take().startswith(b"HTTP/1.1 505")

    run(main())


def test_take_over_on_a_real_socket() -> None:
    """A real server socket and client: the client's bytes after the 101 reach the
    session, and the session's answers reach the client."""

    async def main() -> None:
        sessions: list[EchoSession] = []
        tracker = ConnectionTracker()
        settings = ProtocolSettings()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: HTTP1Protocol(settings, switching_handler(sessions), tracker),
            "127.0.0.1",
            0,
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(UPGRADE)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        for word in (b"one", b"two"):
            writer.write(word)
            assert await asyncio.wait_for(reader.readexactly(3), 5) == word.upper()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        server.close()
        await server.wait_closed()
        assert sessions[0].received == b"onetwo" and sessions[0].eof

    run(main())


def test_the_flow_drops_writes_once_closed() -> None:
    async def main() -> None:
        proto, transport, _ = make_conn(hello_handler)
        flow = proto.flow
        flow.close()
        flow.write(b"late")  # must not reach a closed transport
        assert transport.closed and transport.take() == b""

    run(main())


def test_a_pipelining_client_yields_to_other_connections() -> None:
    """Many small pipelined requests answered at once: the connection answers a turn of
    them, then lets the other connections run before the next turn."""
    run(_pipelining_yields())


async def _pipelining_yields() -> None:
    from bastion.protocol.http1 import PIPELINE_TURN

    order: list[str] = []

    def handler(name: str) -> Callable[[H1Exchange], None]:
        def answer(ex: H1Exchange) -> None:
            order.append(name)
            hello_handler(ex)

        return answer

    flood, flood_t, _ = make_conn(handler("flood"))
    other, other_t, _ = make_conn(handler("other"))
    flood.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * (PIPELINE_TURN * 4))
    other.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    for _ in range(20):
        await asyncio.sleep(0)
    assert order.count("flood") == PIPELINE_TURN * 4
    assert "other" in order[: PIPELINE_TURN + 1], order.index("other")
    assert len(parse_responses(flood_t.take())) == PIPELINE_TURN * 4
