"""Cost of routing (not a test): µs per route match, and per request through the router.

Part 1 times :meth:`Router.find` alone with 10, 100 and 1,000 prefix routes, for a path
that matches the last route, one that matches the first and one that matches none; then
the same numbers of regex routes for contrast. Prefix lookups cost one dict lookup per
``/`` of the path, so their time should stay flat as routes are added; regex routes are
tried one by one.

Part 2 feeds whole requests through ``HTTP1Protocol`` (as ``bench/inprocess.py`` does)
to the ASGI gateway directly, then through a router with a single catch-all route to the
same gateway, then behind 1,000 prefix routes, to show what routing adds per request.

    .venv/bin/python bench/routing.py [--matches N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from bastion.config.schema import AppConfig, Config, RouteConfig
from bastion.edge.router import Router
from bastion.edge.types import RouteMatch
from bastion.gateway.asgi import ASGIGateway
from bastion.protocol.types import Exchange
from bastion.tasks import WorkerTasks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inprocess import asgi_app, measure


def _noop(exchange: Exchange, match: RouteMatch) -> None:
    pass


def prefix_routes(n: int) -> list[RouteConfig]:
    return [msgspec.convert({"path": f"/section{i}/", "return": {}}, RouteConfig) for i in range(n)]


def regex_routes(n: int) -> list[RouteConfig]:
    return [
        msgspec.convert(
            {"path": rf"/section{i}/(?P<rest>.*)", "match": "regex", "return": {}}, RouteConfig
        )
        for i in range(n)
    ]


def time_find(router: Router, path: str, n: int) -> float:
    find = router.find
    headers: list[tuple[bytes, bytes]] = [(b"host", b"example.com")]
    for _ in range(1000):
        find("GET", "", path, headers)
    start = time.perf_counter()
    for _ in range(n):
        find("GET", "", path, headers)
    return (time.perf_counter() - start) / n * 1e6


def part1(n: int) -> None:
    print("route matching, µs per match (Router.find)")
    print(f"{'routes':>8} {'kind':>6} {'last route':>11} {'first route':>12} {'no match':>9}")
    for count in (10, 100, 1000):
        for kind, routes in (("prefix", prefix_routes(count)), ("regex", regex_routes(count))):
            router = Router(routes, [_noop] * count, _noop)
            last = time_find(router, f"/section{count - 1}/css/site/main.css", n)
            first = time_find(router, "/section0/css/site/main.css", n)
            none = time_find(router, "/elsewhere/css/site/main.css", n)
            print(f"{count:>8} {kind:>6} {last:>11.2f} {first:>12.2f} {none:>9.2f}")


def part2(requests: int) -> None:
    from bastion.edge.assemble import Site

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = AppConfig(target="x:y")
    plain = Config(app=app)
    catch_all = msgspec.convert({"path": "/", "app": "default"}, RouteConfig)
    cases: dict[str, Any] = {
        "asgi, no routes": ASGIGateway(asgi_app, plain).handler,  # type: ignore[arg-type]
    }
    for label, routes in (
        ("asgi, 1 route", (catch_all,)),
        ("asgi, 1000 routes", (*prefix_routes(1000), catch_all)),
    ):
        config = msgspec.structs.replace(plain, routes=routes)
        gateways = {"default": ASGIGateway(asgi_app, config)}
        site = Site(config, gateways, WorkerTasks())  # type: ignore[arg-type]
        cases[label] = site.handler
    print("\nwhole requests through HTTP1Protocol, µs CPU per request")
    for label, handler in cases.items():
        us = loop.run_until_complete(measure(handler, requests, False))
        print(f"{label:20} {us:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matches", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()
    part1(args.matches)
    part2(args.requests)


if __name__ == "__main__":
    main()
