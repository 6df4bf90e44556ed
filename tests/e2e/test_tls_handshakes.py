"""TLS handshakes under bastion's control: the per-worker cap on handshakes in progress
(tls.max_handshakes, tls.handshake_wait) and the PROXY protocol before TLS."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from server import APPS, BastionProcess, serve
from test_tls import Certs, connect, port_of, request, tls_args

# the first bytes of a TLS record carrying a ClientHello, and no more: a client that
# starts a handshake and stalls
PARTIAL_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls-handshakes"))


def stall(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(PARTIAL_HELLO)
    return sock


def is_cut(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (waiting for it up to the socket's timeout)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_stalled_handshakes_take_at_most_max_handshakes_slots(certs: Certs) -> None:
    env = {
        "BASTION_TLS__MAX_HANDSHAKES": "2",
        "BASTION_TLS__HANDSHAKE_TIMEOUT": "10",
        "BASTION_TLS__HANDSHAKE_WAIT": "8",
    }
    with (
        serve("tls_apps:asgi_app", *tls_args(certs, "--workers", "1"), env=env) as srv,
        ExitStack() as stack,
    ):
        port = port_of(srv.url)
        # three clients stall: two hold the slots, the third waits for one
        stalled = [stack.enter_context(stall(port)) for _ in range(3)]
        time.sleep(0.2)
        start = time.monotonic()
        # a real client waits for a slot: until the oldest stalled handshake has gone on
        # for a second and is cut for it, long before the handshake timeout
        with connect(port, certs.client_context()) as sock:
            waited = time.monotonic() - start
            assert request(sock)[0] == 200
        assert 0.5 < waited < 6, f"served after {waited:.2f}s"
        # two at once: one takes the free slot, the other the last stalled one's once it
        # has gone on for a second
        begin = time.monotonic()
        with connect(port, certs.client_context()) as a, connect(port, certs.client_context()) as b:
            assert request(a)[0] == 200 and request(b)[0] == 200
        assert time.monotonic() - begin < 3
        for sock in stalled:
            assert is_cut(sock)
        srv.wait_for_log(r"tls\.max_handshakes\): cut 1 ", timeout=5)
        # the count went back down: more clients, one after the other, handshake at once
        for _ in range(3):
            begin = time.monotonic()
            with connect(port, certs.client_context()) as sock:
                assert request(sock)[0] == 200
            assert time.monotonic() - begin < 3


def test_over_the_cap_without_a_wait_a_connection_is_closed_at_once(certs: Certs) -> None:
    env = {
        "BASTION_TLS__MAX_HANDSHAKES": "1",
        "BASTION_TLS__HANDSHAKE_TIMEOUT": "2",
        "BASTION_TLS__HANDSHAKE_WAIT": "0",
    }
    with serve("tls_apps:asgi_app", *tls_args(certs, "--workers", "1"), env=env) as srv:
        port = port_of(srv.url)
        with stall(port) as stalled:
            time.sleep(0.5)
            start = time.monotonic()
            with pytest.raises((ssl.SSLError, OSError)):
                connect(port, certs.client_context()).close()
            assert time.monotonic() - start < 1.5, "refused promptly, not at a timeout"
            assert is_cut(stalled)  # the handshake timeout
        with connect(port, certs.client_context()) as sock:  # its slot is free again
            assert request(sock)[0] == 200
        srv.wait_for_log(r"tls\.max_handshakes", timeout=5)


# -- the PROXY protocol before TLS -----------------------------------------------------


def proxy_tls_server(certs: Certs, tmp_path: Path) -> BastionProcess:
    config = tmp_path / "bastion.toml"
    config.write_text(
        f'[app]\ntarget = "tls_apps:asgi_app"\napp_dir = "{APPS}"\n'
        '[server]\nbind = ["127.0.0.1:0"]\nproxy_protocol = ["127.0.0.1:0"]\n'
        "[workers]\ncount = 1\n"
        f'[tls]\ncertfile = "{certs.cert}"\nkeyfile = "{certs.key}"\n'
    )
    return BastionProcess(["serve", "-c", str(config)])


def tls_over(sock: socket.socket, ctx: ssl.SSLContext, first: bytes) -> dict[str, Any]:
    """A TLS handshake and one request on ``sock`` through memory BIOs, with ``first``
    sent in the same write as the ClientHello; the JSON body of the answer."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    pending = first

    def pump() -> None:
        nonlocal pending
        data = pending + outgoing.read()
        pending = b""
        if data:
            sock.sendall(data)

    def fill() -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        incoming.write(chunk)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump()
            fill()
    pump()
    tls.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    pump()
    answer = b""
    while True:
        try:
            chunk = tls.read(65536)
            if not chunk:  # close_notify
                break
            answer += chunk
        except ssl.SSLWantReadError:
            try:
                fill()
            except ConnectionError:
                break
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer
    return json.loads(body)  # type: ignore[no-any-return]


def test_proxy_header_then_tls(certs: Certs, tmp_path: Path) -> None:
    ctx = certs.client_context()
    with proxy_tls_server(certs, tmp_path) as srv:
        port = port_of(srv.url)
        assert srv.url.startswith("https://")
        # v1, written on its own, then a TLS client on the same socket
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"PROXY TCP4 198.51.100.7 203.0.113.1 5555 443\r\n")
            with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                status, body = request(sock)
        assert status == 200
        assert body["client"] == ["198.51.100.7", 5555]
        assert body["scheme"] == "https" and body["tls"]["tls_version"] == 0x0304
        # v2 (IPv6), in the same write as the ClientHello
        src = socket.inet_pton(socket.AF_INET6, "2001:db8::42")
        dst = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
        addresses = src + dst + struct.pack("!HH", 40000, 443)
        header = (
            b"\r\n\r\n\x00\r\nQUIT\n"
            + bytes([0x21, 0x21])
            + struct.pack("!H", len(addresses))
            + addresses
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            body = tls_over(raw, ctx, header)
        assert body["client"] == ["2001:db8::42", 40000]
        assert body["tls"]["tls_version"] == 0x0304
        # no header: refused, promptly, without an answer
        start = time.monotonic()
        with pytest.raises((ssl.SSLError, OSError)), connect(port, ctx) as sock:
            request(sock)
        assert time.monotonic() - start < 5
