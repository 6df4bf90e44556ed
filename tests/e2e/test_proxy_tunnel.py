"""WebSocket through the reverse proxy: the ``websockets`` client, an edge bastion with
a ``proxy`` route, a backend bastion serving FastAPI and Starlette WebSocket routes."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server import BastionProcess
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from ws_raw import RawWebSocket

BACKEND = """
[app]
target = "ws_frameworks:fastapi_app"

[workers]
count = 1

[apps.starlette]
target = "ws_frameworks:starlette_app"

[[routes]]
path = "/star/"
app = "starlette"

[[routes]]
path = "/"
app = "default"
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def wait_for(text: str, proc: BastionProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in proc.log


@pytest.fixture(scope="module")
def sites(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BastionProcess, BastionProcess]]:
    tmp = tmp_path_factory.mktemp("tunnel")
    backend_cfg = tmp / "backend.toml"
    backend_cfg.write_text(BACKEND)
    with BastionProcess(["serve", "-c", str(backend_cfg), "--bind", "127.0.0.1:0"]) as back:
        host, port = back.host_port
        edge_cfg = tmp / "edge.toml"
        edge_cfg.write_text(
            f'[upstreams.back]\nservers = ["{host}:{port}"]\n\n'
            '[[routes]]\npath = "/"\nproxy = "back"\n'
        )
        with BastionProcess(
            ["serve", "-c", str(edge_cfg), "--bind", "127.0.0.1:0", "--workers", "1"]
        ) as edge:
            yield edge, back


@pytest.fixture(scope="module")
def edge(sites: tuple[BastionProcess, BastionProcess]) -> BastionProcess:
    return sites[0]


@pytest.fixture(scope="module")
def backend(sites: tuple[BastionProcess, BastionProcess]) -> BastionProcess:
    return sites[1]


def ws_url(proc: BastionProcess, path: str) -> str:
    host, port = proc.host_port
    return f"ws://{host}:{port}{path}"


def test_messages_both_ways_and_the_servers_close_code(edge: BastionProcess) -> None:
    async def main() -> float:
        async with connect(
            ws_url(edge, "/ws/lobby?name=ann"),
            subprotocols=["chat"],  # type: ignore[list-item]
            close_timeout=8,
        ) as ws:
            assert ws.subprotocol == "chat"
            assert ws.response.headers["via"] == "1.1 bastion"
            assert await ws.recv() == '{"room":"lobby","name":"ann"}'
            for i in range(20):
                await ws.send(f"hello {i}")
                assert await ws.recv() == f"lobby: hello {i}"
            await ws.send("bye")
            began = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "see you")
            await ws.wait_closed()
        return time.monotonic() - began

    # the backend closing its connection closes the client's at once (the client waits
    # for the server to close the TCP connection, up to its close_timeout, 8 s)
    assert run(main()) < 4.0


def test_the_clients_close_code_reaches_the_backend(
    edge: BastionProcess, backend: BastionProcess
) -> None:
    async def main() -> None:
        async with connect(ws_url(edge, "/ws/close")) as ws:
            await ws.recv()
            await ws.close(4321, "done")
            assert ws.close_code == 4321

    run(main())
    wait_for("fastapi: disconnect 4321", backend)


def test_large_binary_messages_both_ways_with_backpressure(edge: BastionProcess) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def main() -> None:
        async with connect(ws_url(edge, "/star/ws"), max_size=None) as ws:
            for _ in range(4):  # sent before anything is read back: both ways fill up
                await ws.send(payload)
            for _ in range(4):
                assert await ws.recv() == b"starlette:" + payload

    run(main())


def test_the_bytes_after_the_request_head_reach_the_backend(edge: BastionProcess) -> None:
    # the first frame in the same packet as the handshake: a masked text frame "early"
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    mask = b"\x01\x02\x03\x04"
    text = b"early"
    frame = b"\x81" + bytes([0x80 | len(text)]) + mask
    frame += bytes(c ^ mask[i % 4] for i, c in enumerate(text))
    host, port = edge.host_port
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(
            b"GET /ws/raw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" + frame
        )
        got = b""
        deadline = time.monotonic() + 5
        while b"raw: early" not in got and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nupgrade: websocket\r\n" in got.lower()
    assert b"raw: early" in got


def test_a_backend_that_refuses_the_upgrade_answers_as_plain_http(edge: BastionProcess) -> None:
    host, port = edge.host_port
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(
            b"GET /plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    # the ASGI gateway refuses a WebSocket to an HTTP route with 403: passed on as
    # HTTP, and the connection (which asked to switch) closes after it
    assert got.startswith(b"HTTP/1.1 403 ")
    assert b"\r\nvia: 1.1 bastion\r\n" in got
    assert b"upgrade:" not in got.lower()


# -- bastion's own endings of a tunnel ---------------------------------------------------


def edge_for(backend: BastionProcess, tmp: Path, route: str = "", top: str = "") -> BastionProcess:
    host, port = backend.host_port
    cfg = tmp / "edge.toml"
    cfg.write_text(
        f'{top}\n[upstreams.back]\nservers = ["{host}:{port}"]\n\n'
        f'[[routes]]\npath = "/"\nproxy = {{ upstream = "back"{route} }}\n'
    )
    return BastionProcess(["serve", "-c", str(cfg), "--bind", "127.0.0.1:0", "--workers", "1"])


def test_an_idle_tunnel_is_closed_a_busy_one_is_not(
    backend: BastionProcess, tmp_path: Path
) -> None:
    async def idle(url: str) -> float:
        async with connect(url, ping_interval=None, close_timeout=1) as ws:
            await ws.recv()
            began = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            return time.monotonic() - began

    async def busy(url: str) -> None:
        async with connect(url, ping_interval=None) as ws:
            await ws.recv()
            for i in range(12):  # 3 s, never 1 s without a byte
                await ws.send(f"m{i}")
                assert await ws.recv() == f"lobby: m{i}"
                await asyncio.sleep(0.25)

    with edge_for(backend, tmp_path, ", tunnel_idle_timeout = 1.0") as edge:
        url = ws_url(edge, "/ws/lobby")
        took = run(idle(url))
        assert 0.8 <= took < 5.0
        run(busy(url))
        wait_for("tunnel idle for 1s: closed", edge)


def test_worker_shutdown_ends_a_tunnel_with_a_fin_not_a_reset(
    backend: BastionProcess, tmp_path: Path
) -> None:
    with edge_for(backend, tmp_path, top="[workers]\ngraceful_timeout = 8\n") as edge:
        host, port = edge.host_port
        ws = RawWebSocket(host, port, "/star/ws")
        ws.send_frame(0x2, b"ping")
        assert ws.recv_frame()[1] == b"starlette:ping"
        began = time.monotonic()
        edge.signal(signal.SIGTERM)
        ws.sock.settimeout(15)
        # what was in flight arrives, then an orderly end (recv returns b""); a tunnel
        # left to the end of the grace would be reset with the worker's other leftovers
        reset = False
        try:
            while ws.sock.recv(65536):
                pass
        except ConnectionResetError:
            reset = True
        took = time.monotonic() - began
        ws.close()
        assert not reset, "the tunnel was reset, not closed with a FIN"
        assert took < 5.0  # ended at the stop, not at the end of the 8 s grace
        assert edge.wait(20) == 0
