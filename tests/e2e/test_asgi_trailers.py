"""ASGI response trailers (the http.response.trailers extension) through the real
server: written in the last chunk to an HTTP/1.1 client that sent ``TE: trailers``,
dropped otherwise; the response stays well framed either way."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator

import httpx
import pytest
from server import BastionProcess, serve

DIGEST = hashlib.sha256(b"hello world").hexdigest().encode()


@pytest.fixture(scope="module")
def srv() -> Iterator[BastionProcess]:
    with serve("trailers_app:app", "--workers", "1") as proc:
        yield proc


Response = tuple[bytes, dict[bytes, bytes], bytes, list[tuple[bytes, bytes]]]


class Reader:
    """Reads HTTP/1.1 responses off one socket, chunked or not."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server; buffered {self.buf!r}")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self) -> Response:
        """Status line, headers, body, trailer fields."""
        status = self.line()
        headers: dict[bytes, bytes] = {}
        while line := self.line():
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        trailers: list[tuple[bytes, bytes]] = []
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while size := int(self.line(), 16):
                body += self.take(size)
                assert self.take(2) == b"\r\n"
            while line := self.line():
                name, _, value = line.partition(b":")
                trailers.append((name.strip().lower(), value.strip()))
        elif b"content-length" in headers:
            body = self.take(int(headers[b"content-length"]))
        else:  # until the connection closes
            while True:
                try:
                    self._fill()
                except ConnectionError:
                    break
            body, self.buf = self.buf, b""
        return status, headers, body, trailers


def exchange(proc: BastionProcess, *requests: bytes) -> list[Response]:
    with socket.create_connection(proc.host_port, timeout=5) as sock:
        sock.sendall(b"".join(requests))
        reader = Reader(sock)
        return [reader.response() for _ in requests]


def get(path: str, *extra: bytes, version: bytes = b"1.1") -> bytes:
    lines = [b"GET " + path.encode() + b" HTTP/" + version, b"Host: localhost", *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_trailers_are_written_to_a_client_that_accepts_them(srv: BastionProcess) -> None:
    # two requests on one connection: the framing holds after the trailer section
    first, second = exchange(srv, get("/", b"TE: trailers"), get("/", b"te: deflate, Trailers;q=1"))
    for status, headers, body, trailers in (first, second):
        assert status == b"HTTP/1.1 200 OK"
        assert headers[b"transfer-encoding"] == b"chunked"
        assert headers[b"trailer"] == b"x-checksum, x-count"
        assert headers[b"x-offered"] == b"yes"
        assert body == b"hello world"
        # both messages' fields, in order; content-length is never a trailer
        assert trailers == [(b"x-checksum", DIGEST), (b"x-count", b"2")]


def test_trailers_are_dropped_where_they_cannot_go(srv: BastionProcess) -> None:
    # no TE: trailers; then a response with a Content-Length (not chunked)
    plain, length = exchange(srv, get("/"), get("/length", b"TE: trailers"))
    status, headers, body, trailers = plain
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"hello world" and trailers == []
    status, headers, body, trailers = length
    assert b"transfer-encoding" not in headers and headers[b"content-length"] == b"11"
    assert body == b"hello world" and trailers == []
    # HTTP/1.0: no chunked framing, the body runs to the close
    (old,) = exchange(srv, get("/", b"TE: trailers", version=b"1.0"))
    status, headers, body, trailers = old
    assert status.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in headers
    assert body == b"hello world" and trailers == []


def test_httpx_reads_a_response_with_trailers(srv: BastionProcess) -> None:
    with httpx.Client(base_url=srv.url, timeout=5, headers={"TE": "trailers"}) as client:
        ends = set()
        for _ in range(3):
            r = client.get("/")
            assert r.status_code == 200 and r.content == b"hello world"
            ends.add(r.extensions["network_stream"].get_extra_info("client_addr"))
        assert len(ends) == 1, "the same connection each time"
        assert client.get("/length").content == b"hello world"
