"""Requests through real sockets leave no reference cycle behind: an app behind a route,
the reverse proxy (its pooled upstream connections too, and a try that fails), a
WebSocket session. (tests/unit/test_request_cycles.py covers the paths that need no
socket.) The site runs in this process on uvloop, as a worker runs it, with the garbage
collector off; a collection afterwards must find nothing unreachable: an object caught
in a cycle lives until the collector runs, not until its last user lets go."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import os
import socket
from typing import Any

import msgspec
import pytest
import uvloop

from bastion.config.schema import Config
from bastion.edge.assemble import build_site
from bastion.gateway import LoadedApp
from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings
from bastion.protocol.state import ConnectionTracker

ROUNDS = 20


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text")})
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"app"})


async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get(port: int, path: str, times: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for _ in range(times):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
        await reader.readexactly(length)
        answers.append(head[:12])
    writer.close()
    await writer.wait_closed()
    return answers


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


async def websocket(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    writer.write(masked(0x1, b"hi"))
    echo = await reader.readexactly(4)
    writer.write(masked(0x8, b"\x03\xe8"))
    await reader.read()  # the server's close frame, then the end
    writer.close()
    return head[:12] + echo


async def serve(kind: str) -> int:
    up = await asyncio.start_server(upstream, "127.0.0.1", 0)
    config = msgspec.convert(
        {
            "app": {"target": "x:y", "interface": "asgi"},
            "upstreams": {
                "up": {"servers": [f"127.0.0.1:{up.sockets[0].getsockname()[1]}"]},
                "down": {"servers": [f"127.0.0.1:{closed_port()}"]},
            },
            "routes": [
                {"path": "/up/", "proxy": {"upstream": "up"}},
                {"path": "/down/", "proxy": {"upstream": "down"}},
                {"path": "/", "app": "default"},
            ],
        },
        Config,
    )
    site = build_site(config, LoadedApp(app, "asgi", "x:y"))  # type: ignore[arg-type]
    await site.startup()
    tracker = ConnectionTracker()
    settings = ProtocolSettings()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HTTP1Protocol(settings, site.handler, tracker), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]

    async def round_() -> None:
        if kind == "ws":
            assert await websocket(port) == b"HTTP/1.1 101\x81\x02hi"
            return
        path, status = {
            "app": ("/", b"HTTP/1.1 200"),
            "proxy": ("/up/x", b"HTTP/1.1 200"),
            "proxy error": ("/down/x", b"HTTP/1.1 502"),
        }[kind]
        assert await get(port, path, 5) == [status] * 5

    try:
        for _ in range(3):  # warm up: pools, caches, lazy imports
            await round_()
        await asyncio.sleep(0.2)
        gc.collect()
        gc.disable()
        try:
            for _ in range(ROUNDS):
                await round_()
            await asyncio.sleep(0.2)  # the connections' ends are handled
            return gc.collect()
        finally:
            gc.enable()
    finally:
        server.close()
        await site.shutdown()
        up.close()


@pytest.mark.parametrize("kind", ["app", "proxy", "proxy error", "ws"])
def test_requests_through_sockets_leave_no_reference_cycles(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # the failing tries are logged: not the point here
    found = uvloop.run(serve(kind))
    assert found == 0, f"{found} unreachable objects after {ROUNDS} rounds"
