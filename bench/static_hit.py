"""CPU cost of a static-file cache hit through bastion's HTTP/1.1 protocol (not a test).

Serves a 1 KiB CSS file from the static handler's memory cache through ``HTTP1Protocol``
on an in-memory transport (no sockets), with ``bench/inprocess.py``'s loop, and prints CPU
microseconds per request (the best of ``--rounds``, as a shared machine only ever adds
time) for:

- ``protocol``: the protocol answering a constant from a bare handler (the floor);
- ``static-hit``: a plain hit;
- ``static-gzip``: a hit that picks the precompressed ``.gz`` sibling;
- ``static-304``: a revalidation answered 304.

    cd bench && ../.venv/bin/python static_hit.py [--requests N] [--profile NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import tempfile
from typing import Any

import inprocess
import uvloop

from bastion.config.schema import StaticConfig
from bastion.edge.static import StaticHandler
from bastion.edge.types import RouteMatch

BASE = (
    b"GET /static/site.css HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nConnection: keep-alive\r\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="report the best of N rounds")
    parser.add_argument("--profile", help="profile this case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        css = os.urandom(512).hex().encode()
        with open(os.path.join(root, "site.css"), "wb") as f:
            f.write(css)
        with open(os.path.join(root, "site.css.gz"), "wb") as f:
            f.write(gzip.compress(css))
        static = StaticHandler(StaticConfig(root=root))

        def handler(ex: Any) -> None:
            static(ex, RouteMatch(0, {}, ex.path[len("/static") :]))

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        cases: list[tuple[str, Any, bytes]] = [
            ("protocol", inprocess.raw_handler, BASE + b"\r\n"),
            ("static-hit", handler, BASE + b"\r\n"),
            ("static-gzip", handler, BASE + b"Accept-Encoding: gzip, deflate, br\r\n\r\n"),
            ("static-304", handler, b""),
        ]
        for name, h, request in cases:
            if name == "static-304":
                entry = static._cache.entries["/site.css"]
                request = BASE + b"If-None-Match: " + entry.identity.etag + b"\r\n\r\n"
            if args.profile and args.profile != name:
                continue
            inprocess.REQUEST = request  # measure() sends the module's REQUEST
            rounds = 1 if args.profile else args.rounds
            us = min(
                loop.run_until_complete(inprocess.measure(h, args.requests, args.profile == name))
                for _ in range(rounds)
            )
            print(f"{name:12} {us:6.2f} µs CPU per request  (~{1e6 / us:,.0f} req/s of one core)")


if __name__ == "__main__":
    main()
