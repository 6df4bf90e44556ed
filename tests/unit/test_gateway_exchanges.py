"""The gateways' main paths against both exchanges: the in-memory fake and the real one.

The other gateway tests use :mod:`tests.unit.fake_exchange`, which can pause, resume
and disconnect at will. Here the same requests also go through the real HTTP/1.1
protocol (``HTTP1Protocol`` on the fake transport of :mod:`tests.unit.h1_harness`), so
an assumption the fake makes and the real exchange does not hold shows up. Every test
runs for each pair of exchange (``fake``, ``h1``) and gateway (``asgi``,
``wsgi-inline``, ``wsgi-threads``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.config.schema import AppConfig, Config
from bastion.gateway.asgi import ASGIGateway
from bastion.gateway.wsgi import WSGIGateway
from tests.unit.fake_exchange import FakeExchange, run_async
from tests.unit.h1_harness import make_conn, parse_responses

Environ = dict[str, Any]
Scope = dict[str, Any]

DATA = os.urandom(200_000)  # the file the file responses send
TICK = b"tick\n"
TICKS = 100_000  # an endless stream, for all practical purposes


@dataclass
class Reply:
    status: int | None
    headers: dict[str, str]
    body: bytes
    complete: bool  # the response ended normally (not failed, not dropped)


class Record:
    """What the apps report: the stream's progress and whether it was wound down."""

    def __init__(self) -> None:
        self.ticks = 0
        self.ended = threading.Event()  # close() called (WSGI) or the app returned (ASGI)
        self.saw_disconnect = False
        self.send_raised = False  # ASGI send() raised an OSError: the client had gone


# -- the apps: one WSGI, one ASGI, doing the same thing per path --------------------------


def wsgi_app(record: Record, data_file: Path) -> Callable[[Environ, Any], Any]:
    def app(environ: Environ, start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        if path == "/plain":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
            return [b"hello"]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"one ", b"", b"two ", b"three"])
        if path == "/echo":
            body = environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        if path == "/boom":
            raise ValueError("boom")
        if path == "/bytes-like":
            write = start_response("200 OK", [])
            write(bytearray(b"w-"))
            return [bytearray(b"ab"), memoryview(b"cd"), b"", memoryview(bytearray(b"ef"))]
        if path == "/bytes-like-one":
            start_response("200 OK", [("Content-Length", "2")])
            return [bytearray(b"xy")]
        if path == "/file":
            f = open(data_file, "rb")  # noqa: SIM115 - the server closes it through the wrapper
            start_response("200 OK", [("Content-Length", str(len(DATA)))])
            return environ["wsgi.file_wrapper"](f)
        if path == "/endless":
            start_response("200 OK", [])
            return _endless(record)
        raise AssertionError(path)

    return app


def _endless(record: Record) -> Iterator[bytes]:
    try:
        for _ in range(TICKS):
            record.ticks += 1
            yield TICK
    finally:
        record.ended.set()


def asgi_app(record: Record, data_file: Path) -> Callable[..., Any]:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        path = scope["path"]

        async def start(headers: list[tuple[bytes, bytes]]) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def body(data: Any, more: bool = False) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        if path == "/plain":
            await start([(b"content-type", b"text/plain"), (b"content-length", b"5")])
            await body(b"hello")
        elif path == "/stream":
            await start([(b"content-type", b"text/plain")])
            for part in (b"one ", b"", b"two "):
                await body(part, True)
            await body(b"three")
        elif path == "/echo":
            received = b""
            while True:
                message = await receive()
                received += message.get("body", b"")
                if not message.get("more_body"):
                    break
            await start([(b"content-length", str(len(received)).encode())])
            await body(received)
        elif path == "/boom":
            raise ValueError("boom")
        elif path == "/bytes-like":
            await start([])
            await body(bytearray(b"w-"), True)
            await body(bytearray(b"ab"), True)
            await body(memoryview(b"cd"), True)
            await body(memoryview(bytearray(b"ef")))
        elif path == "/bytes-like-one":
            await start([(b"content-length", b"2")])
            await body(bytearray(b"xy"))
        elif path == "/file":
            await start([(b"content-length", str(len(DATA)).encode())])
            await send({"type": "http.response.pathsend", "path": str(data_file)})
        elif path == "/endless":
            await endless(receive, send)
        else:
            raise AssertionError(path)

    async def endless(receive: Any, send: Any) -> None:
        """Streams until the client leaves, as Starlette's StreamingResponse does: it
        listens for http.disconnect (ASGI before 2.4) and stops when send() raises an
        OSError (2.4), whichever comes first."""
        left = asyncio.Event()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            record.saw_disconnect = True
            left.set()

        listener = asyncio.get_running_loop().create_task(listen())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(TICKS):
                if left.is_set():
                    break
                record.ticks += 1
                try:
                    await send({"type": "http.response.body", "body": TICK, "more_body": True})
                except OSError:
                    record.send_raised = True
                    break
                await asyncio.sleep(0)
        finally:
            listener.cancel()
            record.ended.set()

    return app


def make_gateway(kind: str, record: Record, data_file: Path) -> ASGIGateway | WSGIGateway:
    if kind == "asgi":
        return ASGIGateway(asgi_app(record, data_file), Config())
    mode = kind.removeprefix("wsgi-")
    return WSGIGateway(wsgi_app(record, data_file), Config(app=AppConfig(wsgi_mode=mode)))  # type: ignore[arg-type]


# -- the two exchanges ----------------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


class FakeClient:
    """Requests on :class:`FakeExchange`."""

    async def request(
        self, gw: Any, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Reply:
        ex = FakeExchange(method, target, headers, body)
        gw.handler(ex)
        await ex.wait_done()
        return self.reply(ex)

    async def leave_mid_stream(self, gw: Any, target: str, after: int) -> Reply:
        ex = FakeExchange("GET", target)
        gw.handler(ex)
        await until(lambda: len(ex.body) >= after)
        ex.disconnect()
        return self.reply(ex)

    def reply(self, ex: FakeExchange) -> Reply:
        headers = {n.decode("latin-1"): v.decode("latin-1") for n, v in ex.response_headers}
        return Reply(ex.status, headers, bytes(ex.body), ex.finished and not ex.failed)


class H1Client:
    """Requests on the real HTTP/1.1 exchange; each on a connection of its own, which
    the server closes after the response (``Connection: close``)."""

    async def request(
        self, gw: Any, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Reply:
        proto, transport, _ = make_conn(gw.handler)
        head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers)
        raw = head.encode("latin-1") + b"\r\n" + body
        for i in range(0, len(raw), 7):  # in small packets: the body arrives in pieces
            proto.data_received(raw[i : i + 7])
            await asyncio.sleep(0)
        await until(lambda: transport.closed)
        await asyncio.sleep(0)
        data = bytes(transport.data)
        [(status, response_headers, response_body)] = parse_responses(data)
        complete = not transport.aborted and self.whole(response_headers, response_body, data)
        return Reply(status, response_headers, response_body, complete)

    async def leave_mid_stream(self, gw: Any, target: str, after: int) -> Reply:
        proto, transport, _ = make_conn(gw.handler)
        proto.data_received(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await until(lambda: len(transport.data) >= after + 200)
        transport.closed = True  # the peer reset the connection: nothing more goes out
        proto.connection_lost(ConnectionResetError("peer left"))
        head, _, body = bytes(transport.data).partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        return Reply(status, {}, body, False)

    @staticmethod
    def whole(headers: dict[str, str], body: bytes, data: bytes) -> bool:
        if "content-length" in headers:
            return len(body) == int(headers["content-length"])
        return data.endswith(b"0\r\n\r\n")  # the last chunk of a chunked body


CLIENTS: dict[str, type[FakeClient] | type[H1Client]] = {"fake": FakeClient, "h1": H1Client}
GATEWAYS = ("asgi", "wsgi-inline", "wsgi-threads")


@pytest.fixture(params=sorted(CLIENTS))
def client(request: pytest.FixtureRequest) -> FakeClient | H1Client:
    return CLIENTS[request.param]()


@pytest.fixture(params=GATEWAYS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    return path


@pytest.fixture
def record() -> Record:
    return Record()


def fetch(
    client: FakeClient | H1Client,
    kind: str,
    record: Record,
    data_file: Path,
    target: str,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Reply:
    async def main() -> Reply:
        gw = make_gateway(kind, record, data_file)
        reply = await client.request(gw, method, target, headers or [], body)
        await gw.shutdown()
        return reply

    return run_async(main())


# -- the tests ------------------------------------------------------------------------------


def test_plain_response(client: Any, kind: str, record: Record, data_file: Path) -> None:
    reply = fetch(client, kind, record, data_file, "/plain")
    assert (reply.status, reply.body, reply.complete) == (200, b"hello", True)
    assert reply.headers["content-type"] == "text/plain"
    assert reply.headers["content-length"] == "5"


def test_streamed_response(client: Any, kind: str, record: Record, data_file: Path) -> None:
    reply = fetch(client, kind, record, data_file, "/stream")
    assert (reply.status, reply.body, reply.complete) == (200, b"one two three", True)
    assert "content-length" not in reply.headers


def test_body_echo(client: Any, kind: str, record: Record, data_file: Path) -> None:
    body = os.urandom(3000)
    reply = fetch(
        client, kind, record, data_file, "/echo", "POST", [("Content-Length", "3000")], body
    )
    assert (reply.status, reply.complete) == (200, True)
    assert reply.body == body


def test_app_exception_is_a_logged_500(
    client: Any, kind: str, record: Record, data_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reply = fetch(client, kind, record, data_file, "/boom")
    assert reply.status == 500 and b"boom" not in reply.body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "request " in errors[0].getMessage()
    assert errors[0].exc_info is not None and "boom" in str(errors[0].exc_info[1])


@pytest.mark.parametrize(
    ("target", "expected"), [("/bytes-like", b"w-abcdef"), ("/bytes-like-one", b"xy")]
)
def test_bytearray_and_memoryview_chunks(
    client: Any,
    kind: str,
    record: Record,
    data_file: Path,
    target: str,
    expected: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply = fetch(client, kind, record, data_file, target)
    assert (reply.status, reply.body, reply.complete) == (200, expected, True)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_file_response(client: Any, kind: str, record: Record, data_file: Path) -> None:
    reply = fetch(client, kind, record, data_file, "/file")
    assert (reply.status, reply.complete) == (200, True)
    assert reply.headers["content-length"] == str(len(DATA))
    assert reply.body == DATA


def test_client_leaving_mid_stream_stops_the_app(
    client: FakeClient | H1Client,
    kind: str,
    record: Record,
    data_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> Reply:
        gw = make_gateway(kind, record, data_file)
        reply = await client.leave_mid_stream(gw, "/endless", 5 * len(TICK))
        await until(record.ended.is_set)
        await gw.shutdown(grace=1.0)
        return reply

    reply = run_async(main())
    assert reply.status == 200 and not reply.complete
    assert reply.body  # some of the stream got out before the client left
    assert record.ended.is_set()
    assert record.ticks < TICKS  # the stream stopped: it did not run to its end
    if kind == "asgi":
        assert record.saw_disconnect or record.send_raised
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
