"""The access log records a WebSocket session once it ends: status 101, its duration,
the bytes sent and received after the 101, and the close code."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from server import BastionProcess, serve
from websockets.asyncio.client import connect


def ws_url(proc: BastionProcess, path: str) -> str:
    host, port = proc.host_port
    return f"ws://{host}:{port}{path}"


def wait_for_lines(path: Path, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            break
        time.sleep(0.05)
    return lines


async def one_session(proc: BastionProcess, hold: float) -> None:
    # no compression: the byte counts below are exact
    async with connect(ws_url(proc, "/echo?x=1"), compression=None) as ws:
        await ws.send("x" * 1000)
        assert await ws.recv() == "x" * 1000
        await asyncio.sleep(hold)
        await ws.close(4001)


def test_a_session_is_logged_when_it_ends_with_its_duration_and_bytes(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    args = ("ws_app:app", "--workers", "1", "--access-log", "json")
    with serve(*args, "--access-log-file", str(log)) as proc:

        async def main() -> None:
            async with connect(ws_url(proc, "/echo"), compression=None) as ws:
                await ws.send("open")
                assert await ws.recv() == "open"
                await asyncio.sleep(0.5)
                # the handshake alone is not logged: the session is still open
                assert wait_for_lines(log, 1, timeout=0.3) == []
            await one_session(proc, hold=0.4)

        asyncio.run(main())
        lines = wait_for_lines(log, 2)
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["status"] == 101 and first["close_code"] == 1000
    assert first["duration_ms"] >= 500
    record = second
    assert record["status"] == 101
    assert record["path"] == "/echo" and record["query"] == "x=1"
    assert record["upgrade"] == "websocket"
    assert record["close_code"] == 4001
    # in: a 1,000-byte text frame (8 bytes of header and mask) and a close frame with a
    # code (2 + 4 + 2); out: the echo (4 bytes of header) and the close answered (2 + 2)
    assert record["bytes_in"] == 1008 + 8
    assert record["bytes"] == 1004 + 4
    assert 400 <= record["duration_ms"] < 10_000


def test_the_combined_format_logs_the_bytes_sent_after_the_101(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    args = ("ws_app:app", "--workers", "1", "--access-log", "combined")
    with serve(*args, "--access-log-file", str(log)) as proc:
        asyncio.run(one_session(proc, hold=0.0))
        lines = wait_for_lines(log, 1)
    assert len(lines) == 1, lines
    assert '"GET /echo?x=1 HTTP/1.1" 101 1008 ' in lines[0]
