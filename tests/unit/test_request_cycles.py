"""Serving a request leaves no reference cycle behind.

An object caught in a cycle is freed only when the garbage collector runs, not when its
last user lets go: a cycle made by every request holds each request's objects (and
whatever they hold: a body, a file, an app's data) until the next collection, and makes
the collector run more often and longer. This drives the connection class in memory with
the collector off and counts what a collection then finds unreachable: zero, for the
paths every request takes — the ASGI and WSGI gateways, routes, response filters, fixed
responses, static files, 404, an app that fails, a request body, a malformed request.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bastion.config.schema import Config
from bastion.edge.assemble import build_site
from bastion.gateway import LoadedApp
from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings
from bastion.protocol.state import ConnectionTracker
from tests.unit.h1_harness import FakeTransport

GET = b"GET /app HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nAccept-Encoding: gzip\r\n\r\n"


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["query_string"] == b"fail":
        raise RuntimeError("the app failed on purpose")
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello " * 200 + body})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    if environ["QUERY_STRING"] == "fail":
        raise RuntimeError("the app failed on purpose")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " * 200, body]


def site(interface: str, static_root: Path) -> Any:
    (static_root / "f.txt").write_bytes(b"s" * 1024)
    config = msgspec.convert(
        {
            "app": {"target": "x:y", "interface": interface},
            "compress": {"enabled": True},
            "headers": {"preset": "basic", "add": {"X-Served-By": "bastion"}},
            "routes": [
                {"path": "/static/", "static": {"root": str(static_root)}},
                {"path": "/fixed", "return": {"body": "fixed\n"}},
                {"path": "/app", "app": "default"},
                {
                    "path": "/keyed",
                    "app": "default",
                    "auth_api_key": {"keys": {"robot": hashlib.sha256(b"s3cret").hexdigest()}},
                },
                {"path": "/limited", "return": {"body": "x"}, "rate_limit": [{"rate": "1/h"}]},
                {"path": "/denied", "return": {"body": "x"}, "access": ["deny all"]},
                {"path": "/moved", "redirect": {"to": "/app"}},
            ],
        },
        Config,
    )
    app = asgi_app if interface == "asgi" else wsgi_app
    return build_site(config, LoadedApp(app, interface, "x:y")).handler  # type: ignore[arg-type]


REQUESTS = {
    "app": GET,
    "fixed": GET.replace(b"/app", b"/fixed"),
    "static": GET.replace(b"/app", b"/static/f.txt"),
    "not found": GET.replace(b"/app", b"/nothing"),
    "api key": GET.replace(b"/app", b"/keyed").replace(
        b"\r\n\r\n", b"\r\nX-API-Key: s3cret\r\n\r\n"
    ),
    "no api key": GET.replace(b"/app", b"/keyed"),
    "rate limited": GET.replace(b"/app", b"/limited"),  # 200 once, then 429
    "denied": GET.replace(b"/app", b"/denied"),
    "redirect": GET.replace(b"/app", b"/moved"),
    "body": b"POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "chunked body": (
        b"POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    ),
}
# each on a connection of its own (the answer may close it)
MALFORMED = b"GET /app HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n"
FAILING = GET.replace(b"/app", b"/app?fail")


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def settle() -> None:
    for _ in range(20):  # the handler's task, the WSGI thread's answer coming back
        await asyncio.sleep(0.001 if _ > 10 else 0)


async def serve(handler: Any, requests: list[bytes], rounds: int) -> int:
    """Unreachable objects a collection finds after ``rounds`` of ``requests`` on one
    kept-alive connection (and, each round, a malformed request and one the app fails
    on, each on a new connection)."""
    tracker = ConnectionTracker()
    settings = ProtocolSettings(max_keepalive_requests=0)

    def connect() -> tuple[HTTP1Protocol, FakeTransport]:
        proto = HTTP1Protocol(settings, handler, tracker)
        transport = FakeTransport()
        transport.protocol = proto
        proto.connection_made(transport)  # type: ignore[arg-type]
        return proto, transport

    proto, transport = connect()
    for request in requests:  # warm up: caches filled, lazy imports done
        proto.data_received(request)
        await settle()
    transport.take()
    gc.collect()
    for _ in range(rounds):
        for request in requests:
            proto.data_received(request)
            await settle()
        for request, status in ((MALFORMED, b"400"), (FAILING, b"500")):
            other, other_transport = connect()
            other.data_received(request)
            await settle()
            assert other_transport.take().startswith(b"HTTP/1.1 " + status + b" ")
            other.connection_lost(None)
            other_transport.protocol = None  # as the event loop's transports let go
    answers = transport.take()
    for status, times in (
        (b"200", rounds * 6),
        (b"401", rounds),
        (b"403", rounds),
        (b"404", rounds),
        (b"429", rounds),
    ):
        assert answers.count(b"HTTP/1.1 " + status + b" ") == times, status
    assert answers.count(b"HTTP/1.1 30") == rounds
    return gc.collect()


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_requests_leave_no_reference_cycles(
    interface: str, tmp_path: Path, collector_off: None
) -> None:
    handler = site(interface, tmp_path)
    found = asyncio.run(serve(handler, list(REQUESTS.values()), rounds=10))
    # asyncio.run's own loop and its tasks are collected once at the end: allow for that,
    # not for a cycle per request (10 rounds of 14 requests would leave a hundred or more)
    assert found < 40, f"{found} unreachable objects after {10 * 14} requests"
