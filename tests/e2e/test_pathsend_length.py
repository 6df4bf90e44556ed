"""A file sent with ``http.response.pathsend`` never goes past the Content-Length the
app announced: a file that grew since the app measured it must not spill its extra
bytes into the next response on the connection (where a client would read them as the
answer to its next request)."""

from __future__ import annotations

import socket
from pathlib import Path

from server import serve


def test_pathsend_stops_at_the_announced_length(tmp_path: Path) -> None:
    evil = b"0123456789HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nEVIL!\n" + b"z" * 300000
    path = tmp_path / "grown.bin"
    path.write_bytes(evil)
    with serve("slow_reader:app", "--workers", "1") as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                f"GET /first-ten?{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                + f"GET /file?{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"content-length: 10" in first.lower()
    assert rest[:10] == b"0123456789"
    # what follows is the second response, whole, not the file's extra bytes
    second = rest[10:]
    assert second.startswith(b"HTTP/1.1 200"), second[:80]
    head, _, body = second.partition(b"\r\n\r\n")
    assert f"content-length: {len(evil)}".encode() in head.lower()
    assert body == evil
