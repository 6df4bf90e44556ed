"""WebSocket with real frameworks, through the router and the edge filters, and at
shutdown: the real ``bastion`` process, the ``websockets`` client."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server import APPS, BastionProcess, serve
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

CONFIG = """
[app]
target = "ws_frameworks:fastapi_app"

[workers]
count = 1

[compress]
enabled = true
min_size = 1

[headers]
preset = "strict"
add = {{ "X-Edge" = "bastion" }}

[apps.starlette]
target = "ws_frameworks:starlette_app"

[apps.wsgi]
target = "ws_wsgi:app"

[[routes]]
path = "/star/"
app = "starlette"

[[routes]]
path = "/wsgi/"
app = "wsgi"

[[routes]]
path = "/"
app = "default"
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    config = tmp_path_factory.mktemp("ws") / "bastion.toml"
    config.write_text(CONFIG.format())
    with BastionProcess(["serve", "-c", str(config), "--bind", "127.0.0.1:0"], cwd=APPS) as proc:
        yield proc


def ws_url(proc: BastionProcess, path: str) -> str:
    host, port = proc.host_port
    return f"ws://{host}:{port}{path}"


def test_a_fastapi_websocket_route(site: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(site, "/ws/lobby?name=ann"), subprotocols=["chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat"
            assert json.loads(await ws.recv()) == {"room": "lobby", "name": "ann"}
            await ws.send("hi")
            assert await ws.recv() == "lobby: hi"
            await ws.send("bye")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "see you")

    run(main())


def test_fastapi_sees_the_client_leave(site: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(site, "/ws/x")) as ws:
            await ws.recv()
            await ws.close(4321)

    run(main())
    deadline = time.monotonic() + 10
    while "fastapi: disconnect 4321" not in site.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "fastapi: disconnect 4321" in site.log


def test_an_unknown_fastapi_websocket_path_is_refused_with_403(site: BastionProcess) -> None:
    async def main() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(site, "/nowhere"))
        assert refused.value.response.status_code == 403

    run(main())


def test_a_starlette_endpoint_on_its_own_route(site: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(site, "/star/ws")) as ws:
            for payload in (b"", b"abc", bytes(200_000)):
                await ws.send(payload)
                assert await ws.recv() == b"starlette:" + payload

    run(main())


def test_response_filters_do_not_touch_the_upgrade(site: BastionProcess) -> None:
    """The 101 and the frames carry no Content-Encoding, no security headers; plain HTTP
    on the same route still gets both."""
    host, port = site.host_port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws/a HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Accept-Encoding: gzip, br, zstd\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
    head = data.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 101 ")
    for name in (b"content-encoding", b"x-edge", b"strict-transport-security", b"vary"):
        assert b"\r\n" + name + b":" not in head
    plain = httpx.get(site.url + "/plain", headers={"Accept-Encoding": "gzip"})
    assert plain.headers["x-edge"] == "bastion"


def test_a_wsgi_route_serves_an_upgrade_as_plain_http(site: BastionProcess) -> None:
    async def main() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(site, "/wsgi/chat"))
        assert refused.value.response.status_code == 200
        assert refused.value.response.body == b"wsgi websocket"

    run(main())


def test_graceful_shutdown_closes_open_sockets_with_1001(tmp_path: Path) -> None:
    with serve("ws_app:app", "--workers", "1") as proc:

        async def main() -> None:
            sockets = [await connect(ws_url(proc, "/echo")) for _ in range(3)]
            for ws in sockets:
                await ws.send("x")
                assert await ws.recv() == "x"
            proc.signal(signal.SIGTERM)
            for ws in sockets:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

        run(main())
        assert proc.wait(15) == 0
    assert proc.log.count("ws_app: disconnect 1001") == 3
