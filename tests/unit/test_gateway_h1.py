"""The gateways behind the real HTTP/1.1 protocol (on a fake transport).

The rest of the gateway tests use an in-memory exchange; these check that what the
gateways assume of an exchange holds for the real one: body buffering, 100-continue,
pipelining, one 500 per failure, header injection never reaching the wire.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bastion.config.schema import AppConfig, Config
from bastion.gateway.asgi import ASGIGateway
from bastion.gateway.wsgi import WSGIGateway
from tests.unit.fake_exchange import run_async
from tests.unit.h1_harness import FakeTransport, make_conn, parse_responses

Environ = dict[str, Any]


async def echo_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"] == "/boom":
        raise ValueError("boom")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-type", b"text/plain")]
    if scope["path"] == "/inject":
        headers.append((b"x-evil", b"a\r\nset-cookie: pwned=1"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": scope["method"].encode() + b" " + body})


def echo_wsgi(environ: Environ, start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise ValueError("boom")
    body = environ["wsgi.input"].read()
    headers = [("Content-Type", "text/plain")]
    if environ["PATH_INFO"] == "/inject":
        headers.append(("X-Evil", "a\r\nSet-Cookie: pwned=1"))
    start_response("200 OK", headers)
    return [environ["REQUEST_METHOD"].encode() + b" " + body]


GATEWAYS = {
    "asgi": lambda: ASGIGateway(echo_asgi, Config()),
    "wsgi-inline": lambda: WSGIGateway(echo_wsgi, Config()),
    "wsgi-threads": lambda: WSGIGateway(echo_wsgi, Config(app=AppConfig(wsgi_mode="threads"))),
}


@pytest.fixture(params=sorted(GATEWAYS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def exchange(
    kind: str, *pieces: bytes, responses: int = 1, timeout: float = 5.0
) -> tuple[list[tuple[int, dict[str, str], bytes]], FakeTransport]:
    """Feed ``pieces`` to one connection; wait for ``responses`` complete responses."""
    import asyncio

    gw = GATEWAYS[kind]()
    proto, transport, _ = make_conn(gw.handler)
    for piece in pieces:
        proto.data_received(piece)
        for _ in range(3):
            await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            parsed = parse_responses(bytes(transport.data))
        except (AssertionError, ValueError, IndexError):
            parsed = []
        if len(parsed) >= responses:
            break
        if loop.time() > deadline:
            raise AssertionError(f"no complete response: {bytes(transport.data)!r}")
        await asyncio.sleep(0.005)
    await gw.shutdown()
    return parsed, transport


def test_get(kind: str) -> None:
    [(status, headers, body)], _ = run_async(exchange(kind, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 200 and body == b"GET " and headers["content-length"] == "4"


def test_body_in_several_packets(kind: str) -> None:
    [(status, _, body)], _ = run_async(
        exchange(
            kind,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhel",
            b"lo wo",
            b"rld",
        )
    )
    assert (status, body) == (200, b"POST hello world")


def test_chunked_body(kind: str) -> None:
    [(status, _, body)], _ = run_async(
        exchange(
            kind,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"6\r\n world\r\n0\r\n\r\n",
        )
    )
    assert (status, body) == (200, b"POST hello world")


def test_expect_100_continue(kind: str) -> None:
    async def main() -> tuple[bytes, list[tuple[int, dict[str, str], bytes]]]:
        import asyncio

        gw = GATEWAYS[kind]()
        proto, transport, _ = make_conn(gw.handler)
        proto.data_received(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        for _ in range(5):
            await asyncio.sleep(0)
        interim = bytes(transport.data)
        proto.data_received(b"data")
        for _ in range(200):
            if b"POST data" in transport.data:
                break
            await asyncio.sleep(0.005)
        await gw.shutdown()
        return interim, parse_responses(bytes(transport.data))

    interim, parsed = run_async(main())
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert parsed[-1][0] == 200 and parsed[-1][2] == b"POST data"


def test_pipelined_requests_answered_in_order(kind: str) -> None:
    parsed, _ = run_async(
        exchange(
            kind,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb"
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            responses=3,
        )
    )
    assert [body for _, _, body in parsed] == [b"POST a", b"POST b", b"GET "]


def test_app_exception_is_one_500_logged_once(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    [(status, _, body)], transport = run_async(
        exchange(kind, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert status == 500 and b"boom" not in body
    assert transport.data.count(b"HTTP/1.1") == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "request " in errors[0].getMessage()


def test_header_injection_is_a_500_and_never_on_the_wire(kind: str) -> None:
    [(status, headers, _)], transport = run_async(
        exchange(kind, b"GET /inject HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert status == 500
    assert b"pwned" not in transport.data and "set-cookie" not in headers
