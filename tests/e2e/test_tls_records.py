"""bastion's TLS record layer (``protocol/tls_transport.py``) against a real client:
records split and joined across reads, pipelined requests held while the connection
pauses its reading, uploads and downloads larger than the buffers, ``close_notify``
both ways, a TCP end without it, and records that do not decrypt.

The client is Python's ``ssl`` on memory buffers over a plain socket, so that the test
controls every byte on the wire (a half-close, a forged record) and still speaks real
TLS with the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server import BastionProcess, serve
from tls_certs import make_certs


class Client:
    """A TLS client over a socket whose every byte the test can see and shape."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
        self.flush()
        self.eof = False

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            self.eof = True
            return False
        self.incoming.write(data)
        return True

    def send(self, data: bytes, piece: int = 0) -> None:
        """Encrypt and send ``data``; with ``piece``, the records leave in pieces of
        that many bytes, so that the server reads records in parts."""
        self.tls.write(data)
        wire = self.outgoing.read()
        if not piece:
            self.sock.sendall(wire)
            return
        for i in range(0, len(wire), piece):
            self.sock.sendall(wire[i : i + piece])

    def recv(self) -> bytes:
        """Some decrypted bytes; b"" at the server's close_notify or the end of TCP."""
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self.fill():
                    return b""
            except ssl.SSLZeroReturnError:
                return b""

    def response(self) -> tuple[bytes, bytes]:
        """One response with a Content-Length: its head and its body."""
        buf = getattr(self, "_buf", b"")
        while b"\r\n\r\n" not in buf:
            chunk = self.recv()
            if not chunk:
                raise ConnectionError(f"closed after {buf[:200]!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            chunk = self.recv()
            if not chunk:
                raise ConnectionError("closed in the body")
            rest += chunk
        self._buf = rest[length:]
        return head, rest[:length]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def tls(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BastionProcess, ssl.SSLContext]]:
    cert, key, client = make_certs(tmp_path_factory.mktemp("tls-records"))
    args = ["--certfile", cert, "--keyfile", key]
    with serve("http_echo:app", "--workers", "1", *args) as srv:
        yield srv, client


def port(srv: BastionProcess) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def test_pipelined_requests_in_one_record_are_answered_in_order(
    tls: tuple[BastionProcess, ssl.SSLContext],
) -> None:
    srv, context = tls
    c = Client(port(srv), context)
    try:
        requests = b"".join(
            b"GET /n%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i
            if i % 5
            else b"POST /n%d HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc" % i
            for i in range(40)
        )
        c.send(requests)  # one write: the server decrypts them all in one read
        for i in range(40):
            head, body = c.response()
            assert head.startswith(b"HTTP/1.1 200"), head
            echo = json.loads(body)
            assert echo["path"] == f"/n{i}"
            assert echo["body_size"] == (0 if i % 5 else 3)
    finally:
        c.close()


def test_records_split_across_reads_and_large_bodies_both_ways(
    tls: tuple[BastionProcess, ssl.SSLContext],
) -> None:
    srv, context = tls
    c = Client(port(srv), context)
    try:
        body = os.urandom(3 * 1024 * 1024 + 5)
        head = b"POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body)
        c.send(head + body, piece=7777)  # records arrive in parts
        _, answer = c.response()
        echo = json.loads(answer)
        assert echo["body_size"] == len(body)
        assert echo["body_start"].encode("latin-1") == body[:64]
        # a chunked upload, then a 4 MiB download on the same connection
        c.send(
            b"POST /chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (n, b"y" * n) for n in (1, 16384, 70000, 5))
            + b"0\r\n\r\n",
            piece=1000,
        )
        _, answer = c.response()
        assert json.loads(answer)["body_size"] == 1 + 16384 + 70000 + 5
        c.send(b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv():
            data += chunk
        assert data.endswith(b"x" * 1000) and data.count(b"x") >= 4 * 1024 * 1024
    finally:
        c.close()


def test_close_notify_is_answered_with_close_notify(
    tls: tuple[BastionProcess, ssl.SSLContext],
) -> None:
    srv, context = tls
    c = Client(port(srv), context)
    try:
        c.send(b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, _ = c.response()
        assert head.startswith(b"HTTP/1.1 200")
        try:
            c.tls.unwrap()  # sends our close_notify
        except ssl.SSLWantReadError:
            pass
        c.flush()
        assert c.recv() == b""  # the server's close_notify (or its end of TCP)
        assert not c.eof, "the server closed TCP without close_notify"
        # and then the TCP connection ends
        while c.fill():
            pass
    finally:
        c.close()


def test_a_request_then_a_tcp_end_without_close_notify_still_gets_its_answer(
    tls: tuple[BastionProcess, ssl.SSLContext],
) -> None:
    srv, context = tls
    c = Client(port(srv), context)
    try:
        c.send(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")  # answered in 3 s
        c.sock.shutdown(socket.SHUT_WR)  # a FIN, no close_notify
        head, body = c.response()
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["path"] == "/slow"
    finally:
        c.close()


def test_a_forged_record_ends_that_connection_only(
    tls: tuple[BastionProcess, ssl.SSLContext],
) -> None:
    srv, context = tls
    c = Client(port(srv), context)
    try:
        # application data whose authentication tag cannot be right
        c.sock.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(0x40))
        # what comes back (the session tickets sent after the handshake, then the
        # alert, both encrypted in TLS 1.3) decrypts to no data: an alert, or the end
        with pytest.raises((ssl.SSLError, ConnectionError)):
            data = c.recv()
            assert data == b""
            raise ConnectionError("closed without an alert")
    finally:
        c.close()
    r = httpx.get(srv.url.replace("127.0.0.1", "localhost") + "/after", verify=context)
    assert r.status_code == 200 and r.json()["path"] == "/after"


def test_a_close_notify_after_pipelined_requests_still_gets_every_answer(
    tls: tuple[BastionProcess, ssl.SSLContext],
) -> None:
    """TLS 1.3 lets a client close its side and go on reading (RFC 8446 6.1), as
    ``shutdown(SHUT_WR)`` does on plain TCP."""
    srv, context = tls
    c = Client(port(srv), context)
    try:
        c.send(b"".join(b"GET /mib?%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(3)))
        try:
            c.tls.unwrap()  # our close_notify, right behind the requests
        except ssl.SSLWantReadError:
            pass
        c.flush()
        data = b""
        while chunk := c.recv():
            data += chunk
        assert data.count(b"HTTP/1.1 200") == 3
        assert data.count(b"x") >= 3 * 1024 * 1024
    finally:
        c.close()
    assert "has no effect when using ssl" not in srv.log


def test_connections_bastion_closes_free_their_place_at_once(tmp_path: Path) -> None:
    """Closing sends close_notify and closes TCP: bastion does not wait for the client's
    close_notify (a client gone from the network never sends one). Idle kept-alive
    connections of clients that never read again leave at the keep-alive timeout, and a
    new client gets in; a stop does not wait for them either."""
    cert, key, client = make_certs(tmp_path)
    args = ["--certfile", cert, "--keyfile", key]
    args += ["--workers", "1", "--max-connections", "5", "--keepalive-timeout", "1"]

    with serve("http_echo:app", *args) as srv:
        url = srv.url.replace("127.0.0.1", "localhost")
        idle = []
        for _ in range(5):
            s = client.wrap_socket(
                socket.create_connection(("127.0.0.1", port(srv))), server_hostname="localhost"
            )
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # then never read
            idle.append(s)
        start = time.monotonic()
        while True:
            r = httpx.get(url + "/in", verify=client, timeout=5)
            if r.status_code == 200:
                break
            assert r.status_code == 503
            assert time.monotonic() - start < 10, "the idle connections kept their places"
            time.sleep(0.3)
        keep = client.wrap_socket(
            socket.create_connection(("127.0.0.1", port(srv))), server_hostname="localhost"
        )
        keep.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        keep.recv(100)
        srv.signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert srv.wait(15) == 0
        assert time.monotonic() - stopped < 10
        for s in [*idle, keep]:
            s.close()


def test_a_response_cut_short_by_the_app_ends_without_close_notify(
    tls: tuple[BastionProcess, ssl.SSLContext],
) -> None:
    """HTTP/1.0: the body ends where the connection does. A clean close_notify would
    tell the client the body is whole; bastion drops the connection instead."""
    srv, context = tls
    c = Client(port(srv), context)
    try:
        c.send(b"GET /crash HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        with pytest.raises((ssl.SSLEOFError, ConnectionResetError)):
            while chunk := c.recv():
                data += chunk
            raise AssertionError(f"a clean close_notify after {data!r}")
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"half of it")
    finally:
        c.close()


def test_responses_clients_do_not_read_count_against_max_pending_output(tmp_path: Path) -> None:
    """The encrypted bytes waiting for slow clients are in the TCP transport's buffer,
    where ``limits.max_pending_output`` looks: over it, the slowest are dropped."""
    cert, key, context = make_certs(tmp_path)
    (tmp_path / "bastion.toml").write_text(
        f"""
[server]
bind = ["127.0.0.1:0"]
[workers]
count = 1
[limits]
max_pending_output = "24m"
[timeouts]
min_send_rate = 0
[tls]
certfile = "{cert}"
keyfile = "{key}"
"""
    )
    with serve("slow_reader:app", "-c", str(tmp_path / "bastion.toml")) as srv:
        stalled = []
        for _ in range(3):  # 3 x 32 MiB (more than the kernel's buffers), none read
            raw = socket.create_connection(("127.0.0.1", port(srv)))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s = context.wrap_socket(raw, server_hostname="localhost")
            s.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            stalled.append(s)
        srv.wait_for_log(r"limits.max_pending_output is \d+\): dropped the \d+ slowest", 15)
        for s in stalled:
            s.close()
