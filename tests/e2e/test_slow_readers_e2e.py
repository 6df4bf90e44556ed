"""Clients that stop reading their response do not hold a connection slot forever."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from server import BastionProcess, peer_closed, serve


def stalled_client(proc: BastionProcess, request: bytes) -> socket.socket:
    """Connect with a tiny receive buffer, send ``request`` and never read."""
    host, port = proc.host_port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((host, port))
    sock.sendall(request)
    return sock


def status_on_new_connection(proc: BastionProcess) -> int:
    host, port = proc.host_port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: a\r\nRange: bytes=0-0\r\n\r\n")
        head = sock.recv(200)
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /big HTTP/1.0\r\n\r\n",
        b"GET /file?{file} HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    ids=["connection-close", "http10", "sendfile"],
)
def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(
    request_line: bytes, tmp_path: Path
) -> None:
    big_file = tmp_path / "big.bin"
    with big_file.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    request = request_line.replace(b"{file}", str(big_file).encode())
    # the send timeout alone: no minimum rate
    env = {"BASTION_TIMEOUTS__SEND": "1", "BASTION_TIMEOUTS__MIN_SEND_RATE": "0"}
    args = ("slow_reader:app", "--workers", "1", "--max-connections", "1")
    with serve(*args, "--keepalive-timeout", "1", env=env) as proc:
        stalled = stalled_client(proc, request)
        try:
            time.sleep(0.5)
            assert status_on_new_connection(proc) == 503  # the slot is taken
            # send timeout (1 s) and the tick that enforces it, with room to spare; no
            # new client comes meanwhile (it could have the stalled one evicted)
            time.sleep(3.5)
            assert peer_closed(stalled)
            assert status_on_new_connection(proc) == 200
        finally:
            stalled.close()
