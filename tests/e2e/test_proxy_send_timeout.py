"""The upstream's ``write_timeout``: a request body the upstream stops taking fails the
try after that long with 504, streamed (with its length or chunked) or buffered."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_proxy import proxy
from test_proxy_buffering import read_response

BODY = 16 << 20  # far more than the kernel buffers between bastion and the upstream
PIECE = 1 << 20


@contextmanager
def deaf_upstream() -> Iterator[str]:
    """An upstream that takes connections (the kernel does) and never reads them."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def send_pieces(s: socket.socket, chunked: bool) -> None:
    """Send the body until it is all sent or bastion stops taking it."""
    piece = b"x" * PIECE
    try:
        for _ in range(BODY // PIECE):
            s.sendall(b"%x\r\n%s\r\n" % (PIECE, piece) if chunked else piece)
        if chunked:
            s.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # answered and closed before the end


@pytest.mark.parametrize(
    ("framing", "route"),
    [
        ("content-length", ""),
        ("chunked", ""),
        ("content-length", ", buffer_request = 65536"),
    ],
)
def test_a_body_the_upstream_stops_taking_times_out(
    tmp_path: Path, framing: str, route: str
) -> None:
    chunked = framing == "chunked"
    with (
        deaf_upstream() as address,
        proxy(tmp_path, [address], upstream="write_timeout = 0.5", route=route) as p,
        socket.create_connection(p.host_port, timeout=20) as s,
    ):
        head = b"POST /up HTTP/1.1\r\nHost: x\r\n"
        head += b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % BODY
        started = time.monotonic()
        s.sendall(head + b"\r\n")
        sender = threading.Thread(target=send_pieces, args=(s, chunked), daemon=True)
        sender.start()
        got = read_response(s)
        elapsed = time.monotonic() - started
        s.shutdown(socket.SHUT_RDWR)
        sender.join(10)
    assert got.startswith(b"HTTP/1.1 504 "), got[:300]
    assert b"504 Gateway Timeout (upstream " in got  # the detail goes to the log only
    assert elapsed < 15, elapsed
    assert "timed out sending the request body (0.5 s)" in p.log
