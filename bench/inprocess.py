"""CPU cost per request of bastion's own layers, without sockets (not a test).

Feeds requests to ``HTTP1Protocol`` through an in-memory transport on a uvloop loop and
reports CPU microseconds per request (``time.process_time``), for the protocol alone,
with the ASGI and WSGI gateways, each gateway also behind two routes (a static directory,
then the app at /) to show what the router adds to the app's path, and through the edge
(routes, response filters). CPU time is far steadier than wall-clock throughput on a
shared machine, so this is the number to compare before and after a hot-path change:

    .venv/bin/python bench/inprocess.py [--requests N] [--profile NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
from typing import Any, Literal

import httptools
import msgspec
import uvloop

from bastion.config.schema import AppConfig, Config, RouteConfig, StaticConfig
from bastion.edge.assemble import build_site
from bastion.gateway import LoadedApp
from bastion.gateway.asgi import ASGIGateway
from bastion.gateway.wsgi import WSGIGateway
from bastion.protocol.forwarded import TrustedProxies
from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings
from bastion.protocol.state import ConnectionTracker

REQUEST = (
    b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nConnection: keep-alive\r\n\r\n"
)
BODY = b"Hello, world!"
FORWARDED: TrustedProxies | None = None  # --forwarded
METRICS = False  # --metrics
ROUTES_TARGET_US = 1.0  # what routes may add to the app's path, in CPU µs per request


class Transport:
    __slots__ = ("last", "writes")

    def __init__(self) -> None:
        self.writes = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise RuntimeError("connection closed unexpectedly")

    def is_closing(self) -> bool:
        return False


def raw_handler(ex: Any) -> None:
    ex.start_response(200, [(b"content-type", b"text/plain")])
    ex.finish(BODY)


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [BODY]


def routed(app: Any, interface: Literal["asgi", "wsgi"], static_root: str) -> Any:
    """The handler of a site with two routes: a static directory, then the app at /
    (the request goes past the first to the second), as ``build_site`` makes it."""
    config = Config(
        app=AppConfig(target="x:y", interface=interface),
        routes=(
            RouteConfig(path="/static/", static=StaticConfig(root=static_root)),
            RouteConfig(path="/", app="default"),
        ),
    )
    return build_site(config, LoadedApp(app, interface, "x:y")).handler


def site(**tables: Any) -> Any:
    """The handler ``build_site`` gives for a configuration of the ASGI app plus
    ``tables`` (routes, compress, headers), as a worker would serve it."""
    config = msgspec.convert({"app": {"target": "x:y"}, **tables}, Config)
    return build_site(config, LoadedApp(asgi_app, "asgi", "x:y")).handler


def handlers(static_root: str) -> dict[str, Any]:
    config = Config(app=AppConfig(target="x:y"))
    filters = {
        "compress": {"enabled": True},
        "headers": {"preset": "basic", "add": {"X-Served-By": "bastion"}},
    }
    return {
        "floor": None,
        "protocol": raw_handler,
        "asgi": ASGIGateway(asgi_app, config).handler,  # type: ignore[arg-type]
        "asgi+routes": routed(asgi_app, "asgi", static_root),
        "wsgi-inline": WSGIGateway(wsgi_app, config).handler,
        "wsgi-inline+routes": routed(wsgi_app, "wsgi", static_root),
        # the edge: the default app with [compress] and [headers], no routes
        "asgi+filters": site(**filters),
        # one route to the app; one fixed response; both with the two filters
        "route-asgi": site(routes=[{"path": "/", "app": "default"}]),
        "route-asgi+f": site(routes=[{"path": "/", "app": "default"}], **filters),
        "route-return": site(routes=[{"path": "/", "return": {"body": "hi"}}]),
        "route-return+f": site(routes=[{"path": "/", "return": {"body": "hi"}}], **filters),
        # a 1 KiB file from a static route (from memory), and the same answered 304
        "static-1k": static_site(static_root),
        "static-304": static_site(static_root),
    }


STATIC_FILE = b"s" * 1024
STATIC_GET = b"GET /static/f.txt HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"


def static_site(static_root: str) -> Any:
    """The handler of a site with one static route holding a 1 KiB file."""
    with open(os.path.join(static_root, "f.txt"), "wb") as f:
        f.write(STATIC_FILE)
    config = Config(
        app=AppConfig(target="x:y", interface="asgi"),
        routes=(RouteConfig(path="/static/", static=StaticConfig(root=static_root)),),
    )
    return build_site(config, LoadedApp(asgi_app, "asgi", "x:y")).handler


def request_for(name: str, handler: Any, loop: asyncio.AbstractEventLoop) -> tuple[bytes, bytes]:
    """The request a case sends, and the end its last response must have."""
    if name == "static-1k":
        return STATIC_GET, STATIC_FILE
    if name == "static-304":
        transport = Transport()

        async def first_get() -> None:
            proto = HTTP1Protocol(ProtocolSettings(), handler, ConnectionTracker())
            proto.connection_made(transport)  # type: ignore[arg-type]
            proto.data_received(STATIC_GET)
            await asyncio.sleep(0.01)

        loop.run_until_complete(first_get())
        etag = transport.last.partition(b"etag: ")[2].partition(b"\r\n")[0]
        if not etag:
            raise RuntimeError(f"no ETag in {transport.last[:300]!r}")
        return STATIC_GET.replace(b"\r\n\r\n", b"\r\nIf-None-Match: " + etag + b"\r\n\r\n"), b""
    return REQUEST, BODY


class FloorProtocol:
    """The least any httptools server does: parse, then write a constant response."""

    RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\n" + BODY

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(self.RESPONSE)


async def measure(
    handler: Any, n: int, profile: bool, request: bytes = REQUEST, tail: bytes = BODY
) -> float:
    settings = ProtocolSettings(max_keepalive_requests=0, forwarded=FORWARDED)
    tracker = ConnectionTracker()
    recorder: Any = None
    board: Any = None
    if METRICS:  # what a worker does with the admin listener on: count into its slot,
        # copied to the board once a second, with garbage collections timed
        from bastion.observe.board import Board
        from bastion.observe.recorder import Recorder

        board = Board(["app"], 4)
        recorder = Recorder(board, 0)
        recorder.start(asyncio.get_running_loop(), tracker)
    if FORWARDED is not None:
        request = request.replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n", 1)
    if handler is None:
        proto: Any = FloorProtocol()
    else:
        proto = HTTP1Protocol(settings, handler, tracker)
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    sleep = asyncio.sleep
    for _ in range(2000):  # warm up
        proto.data_received(request)
        await sleep(0)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    start = time.process_time()
    for _ in range(n):
        proto.data_received(request)
        await sleep(0)
    elapsed = time.process_time() - start
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    proto.connection_lost(None)
    if recorder is not None:
        recorder.close()
        board.close()
    if transport.writes < n:
        raise RuntimeError(f"only {transport.writes} responses for {n} requests")
    last = transport.last
    if tail == b"" and not last.startswith(b"HTTP/1.1 304 "):
        raise RuntimeError(f"the last response was not a 304: {last[:200]!r}")
    if tail and not last.endswith((tail, b"hi")):  # the app (or the fixed answer), not a 404
        raise RuntimeError(f"the last response was not the app's: {last[:200]!r}")
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument(
        "--profile", help="profile this case (protocol, asgi, asgi+routes, wsgi-inline, ...)"
    )
    parser.add_argument("--only", help="measure only these cases (comma-separated)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="measure every case this many times, interleaved, and keep each case's least "
        "disturbed (smallest) figure (default 5; 1 with --profile)",
    )
    parser.add_argument(
        "--forwarded",
        action="store_true",
        help="trust the peer as a proxy and send X-Forwarded-For (the real client's cost)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="count every response into a metrics board, as with [admin] bind set",
    )
    args = parser.parse_args()
    if args.metrics:
        global METRICS
        METRICS = True
    if args.forwarded:
        global FORWARDED
        FORWARDED = TrustedProxies(["127.0.0.1"])
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    costs: dict[str, float] = {}
    rounds = 1 if args.profile else max(1, args.rounds)
    with tempfile.TemporaryDirectory(prefix="bastion-inprocess-") as static_root:
        cases = {
            name: handler
            for name, handler in handlers(static_root).items()
            if (not args.profile or args.profile == name)
            and (not args.only or name in args.only.split(","))
        }
        requests = {name: request_for(name, handler, loop) for name, handler in cases.items()}
        for _ in range(rounds):
            for name, handler in cases.items():
                profile = args.profile == name
                request, tail = requests[name]
                us = loop.run_until_complete(
                    measure(handler, args.requests, profile, request, tail)
                )
                costs[name] = min(us, costs.get(name, us))
        for name, us in costs.items():
            print(f"{name:18} {us:6.2f} µs CPU per request  (~{1e6 / us:,.0f} req/s of one core)")
    for name in ("asgi", "wsgi-inline"):
        if name in costs and f"{name}+routes" in costs:
            extra = costs[f"{name}+routes"] - costs[name]
            verdict = "PASS" if extra <= ROUTES_TARGET_US else "MISS"
            print(
                f"{name}: routes (a static route, then the app's) add {extra:+.2f} µs "
                f"({verdict}: target <= {ROUTES_TARGET_US:g} µs)"
            )


if __name__ == "__main__":
    main()
