"""File responses really go out with ``os.sendfile`` (zero-copy), not read and written.

A site built from a configuration file as the worker builds it (a static route, a WSGI
app inline and on threads, an ASGI app) is served by the real ``HTTP1Protocol`` on a
uvloop event loop and a TCP socket on 127.0.0.1. ``os.sendfile`` is wrapped to count
the bytes it sends: every byte of a large static file, of a ``wsgi.file_wrapper`` body
and of an ASGI ``http.response.pathsend`` must have gone through it, and arrive intact.
(bastion.protocol.sendfile is not compiled, so it looks ``os.sendfile`` up at each call.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config.load import load_config
from bastion.edge.assemble import build_site
from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings
from bastion.protocol.state import ConnectionTracker
from tests.unit.fake_exchange import run_async

BIG = 1024 * 1024 + 17  # well over memory_max_file below: never cached, always sendfile
MEMORY_MAX_FILE = 64 * 1024

APPS = """
import os

BIG = os.path.join(os.path.dirname(__file__), "files", "big.bin")


def wsgi_app(environ, start_response):
    f = open(BIG, "rb")
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"),
         ("Content-Length", str(os.path.getsize(BIG)))],
    )
    return environ["wsgi.file_wrapper"](f)


async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", str(os.path.getsize(BIG)).encode())],
    })
    await send({"type": "http.response.pathsend", "path": BIG})
"""


class SendfileCounter:
    """Wraps ``os.sendfile``: the real call, and the bytes it reported sent."""

    def __init__(self) -> None:
        self.real = os.sendfile
        self.sent = 0
        self.calls = 0

    def __call__(self, out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = self.real(out_fd, in_fd, offset, count)
        self.calls += 1
        self.sent += n
        return n

    def take(self) -> int:
        sent, self.sent, self.calls = self.sent, 0, 0
        return sent


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendfileCounter]:
    c = SendfileCounter()
    monkeypatch.setattr(os, "sendfile", c)
    yield c


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader may add the app's folder
    files = tmp_path / "files"
    files.mkdir()
    (files / "big.bin").write_bytes(os.urandom(BIG))
    (files / "small.txt").write_bytes(b"small file\n")
    (tmp_path / "zc_apps.py").write_text(APPS)
    apps = str(tmp_path / "zc_apps.py")
    (tmp_path / "bastion.toml").write_text(
        f"""
[app]
target = {json.dumps(apps + ":wsgi_app")}

[apps.threads]
target = {json.dumps(apps + ":wsgi_app")}
wsgi_mode = "threads"
threads = 2

[apps.asgi]
target = {json.dumps(apps + ":asgi_app")}

[[routes]]
path = "/static/"
static = {{ root = {json.dumps(str(files))}, memory_max_file = {MEMORY_MAX_FILE} }}

[[routes]]
path = "/threads/"
app = "threads"

[[routes]]
path = "/asgi/"
app = "asgi"

[[routes]]
path = "/"
app = "default"
"""
    )
    return tmp_path


Response = tuple[int, dict[str, str], bytes]


async def get(port: int, target: str, **headers: str) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {target} HTTP/1.1", "Host: test", "Connection: close"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        parsed = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(parsed["content-length"]))
        assert await reader.read() == b""  # nothing after the declared body
        return int(status_line.split()[1]), parsed, body
    finally:
        writer.close()


def serve_and_fetch(
    site_dir: Path, targets: list[tuple[str, dict[str, str]]], counter: SendfileCounter
) -> list[tuple[Response, int]]:
    """Each response with the bytes ``os.sendfile`` sent while it was served."""
    config = load_config(file=str(site_dir / "bastion.toml"), env={}, cli={})

    async def main() -> list[tuple[Response, int]]:
        site = build_site(config)
        await site.startup()
        tracker = ConnectionTracker()
        settings = ProtocolSettings.from_config(config)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: HTTP1Protocol(settings, site.handler, tracker), "127.0.0.1", 0
        )
        out = []
        try:
            port = server.sockets[0].getsockname()[1]
            for target, headers in targets:
                counter.take()
                response = await get(port, target, **headers)
                out.append((response, counter.take()))
        finally:
            server.close()
            await server.wait_closed()
            tracker.abort_all()
            await site.shutdown()
        return out

    return run_async(main(), timeout=30)


def test_large_static_file_goes_through_sendfile(site_dir: Path, counter: SendfileCounter) -> None:
    data = (site_dir / "files" / "big.bin").read_bytes()
    (full, full_sent), (part, part_sent), (small, small_sent) = serve_and_fetch(
        site_dir,
        [
            ("/static/big.bin", {}),
            ("/static/big.bin", {"range": "bytes=1000-300999"}),
            ("/static/small.txt", {}),
        ],
        counter,
    )
    assert full[0] == 200 and full[2] == data
    assert full_sent == BIG, f"{full_sent} of {BIG} bytes went through os.sendfile"
    assert part[0] == 206 and part[2] == data[1000:301000]
    assert part_sent == 300_000
    # a file under memory_max_file is answered from memory, with no sendfile at all
    assert small[0] == 200 and small[2] == b"small file\n"
    assert small_sent == 0


@pytest.mark.parametrize("target", ["/wsgi", "/threads/wsgi", "/asgi/pathsend"])
def test_app_file_responses_go_through_sendfile(
    site_dir: Path, counter: SendfileCounter, target: str
) -> None:
    data = (site_dir / "files" / "big.bin").read_bytes()
    [(response, sent)] = serve_and_fetch(site_dir, [(target, {})], counter)
    status, headers, body = response
    assert status == 200
    assert headers["content-length"] == str(BIG)
    assert body == data
    assert sent == BIG, f"{sent} of {BIG} bytes went through os.sendfile"
