"""The real client address through the real ``bastion``: trusted and untrusted
X-Forwarded-For seen by an ASGI app, a WSGI app, a WebSocket and the access log; PROXY
protocol v1/v2 on a listener that expects it (and plain HTTP refused there)."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server import BastionProcess
from ws_raw import RawWebSocket

from bastion.protocol.proxy import V2_SIGNATURE

CONFIG = """
[app]
target = "addr_app:app"

[apps.legacy]
target = "addr_app:wsgi_app"

[server]
forwarded_allow_ips = [{trusted}]
{extra}

[log]
access = "combined"
access_file = "{log}"

[[routes]]
path = "/wsgi/"
app = "legacy"

[[routes]]
path = "/nothing"
match = "exact"
methods = ["POST"]
return = {{ body = "x" }}

[[routes]]
path = "/(?!nothing$).*"
match = "regex"
app = "default"
"""


def start(tmp: Path, trusted: str, binds: list[str], extra: str = "") -> BastionProcess:
    log = tmp / "access.log"
    config = tmp / "bastion.toml"
    config.write_text(CONFIG.format(trusted=trusted, extra=extra, log=log))
    args = ["serve", "-c", str(config), "--workers", "1"]
    for b in binds:
        args += ["--bind", b]
    return BastionProcess(args)


@pytest.fixture(scope="module")
def trusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    """Trusts 127.0.0.1 (the tests' own connections) as a proxy."""
    with start(tmp_path_factory.mktemp("trusting"), '"127.0.0.1"', ["127.0.0.1:0"]) as p:
        yield p


@pytest.fixture(scope="module")
def distrusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    with start(tmp_path_factory.mktemp("distrusting"), '"10.0.0.0/8"', ["127.0.0.1:0"]) as p:
        yield p


def access_log(proc: BastionProcess, until: str) -> str:
    """The access log once it has a line with ``until``."""
    config = Path(proc.args[proc.args.index("-c") + 1])
    path = config.parent / "access.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and until in path.read_text():
            break
        time.sleep(0.05)
    return path.read_text()


SPOOF = {"X-Forwarded-For": "6.6.6.6, 1.2.3.4", "X-Forwarded-Proto": "https"}


def test_trusted_proxy_gives_client_and_scheme(trusting: BastionProcess) -> None:
    asgi = httpx.get(trusting.url + "/a?x", headers=SPOOF, timeout=10).json()
    assert asgi["client"] == ["1.2.3.4", 0]
    assert asgi["scheme"] == "https"
    wsgi = httpx.get(trusting.url + "/wsgi/b", headers=SPOOF, timeout=10).json()
    assert wsgi["client"] == ["1.2.3.4", "0"]
    assert wsgi["scheme"] == "https"
    # a request no route matches: the access log has the same client
    r = httpx.get(trusting.url + "/nothing", headers={"X-Forwarded-For": "5.6.7.8"}, timeout=10)
    assert r.status_code == 405
    log = access_log(trusting, "/nothing")
    assert "1.2.3.4 - - [" in log and '"GET /a?x HTTP/1.1" 200' in log
    assert "5.6.7.8 - - [" in log and '"GET /nothing HTTP/1.1" 405' in log
    assert "6.6.6.6" not in log and "127.0.0.1 - -" not in log


def test_trusted_proxy_host_and_garbage(trusting: BastionProcess) -> None:
    got = httpx.get(
        trusting.url + "/",
        headers={"X-Forwarded-For": "1.2.3.4, evil", "X-Forwarded-Host": "www.example.com"},
        timeout=10,
    ).json()
    assert got["client"][0] == "127.0.0.1"  # the last trusted hop, not "evil"
    assert got["host"] == "www.example.com"


def test_untrusted_peer_headers_ignored(distrusting: BastionProcess) -> None:
    asgi = httpx.get(distrusting.url + "/", headers=SPOOF, timeout=10).json()
    assert asgi["client"][0] == "127.0.0.1"
    assert asgi["scheme"] == "http"
    wsgi = httpx.get(distrusting.url + "/wsgi/", headers=SPOOF, timeout=10).json()
    assert wsgi["client"][0] == "127.0.0.1"
    assert wsgi["scheme"] == "http"
    log = access_log(distrusting, "/wsgi/")
    assert "1.2.3.4" not in log and "127.0.0.1 - - [" in log


def test_websocket_scope(trusting: BastionProcess, distrusting: BastionProcess) -> None:
    extra = "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
    for proc, client, scheme in (
        (trusting, "1.2.3.4", "wss"),
        (distrusting, "127.0.0.1", "ws"),
    ):
        host, port = proc.host_port
        ws = RawWebSocket(host, port, "/ws", extra)
        opcode, payload, _, _ = ws.recv_frame()
        ws.close()
        info = json.loads(payload)
        assert (info["client"][0], info["scheme"]) == (client, scheme)


# -- the PROXY protocol ----------------------------------------------------------------


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    """127.0.0.1:0 expects PROXY headers; [::1]:0 does not. 192.0.2.0/24 is trusted."""
    with start(
        tmp_path_factory.mktemp("proxied"),
        '"192.0.2.0/24"',
        ["127.0.0.1:0", "[::1]:0"],
        extra='proxy_protocol = ["127.0.0.1:0"]',
    ) as p:
        yield p


def addr(proc: BastionProcess, i: int) -> tuple[str, int]:
    rest = proc.addresses[i].removeprefix("http://")
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def exchange(address: tuple[str, int], data: bytes, timeout: float = 10) -> bytes:
    """Send ``data``, then read until the server closes."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


REQUEST = b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"


def body(response: bytes) -> dict[str, object]:
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    return json.loads(rest)  # type: ignore[no-any-return]


def v2(fam: int, addresses: bytes, command: int = 1) -> bytes:
    return (
        V2_SIGNATURE + bytes([0x20 | command, fam]) + struct.pack("!H", len(addresses)) + addresses
    )


def test_proxy_v1(proxied: BastionProcess) -> None:
    out = exchange(
        addr(proxied, 0), b"PROXY TCP4 198.51.100.7 203.0.113.1 5555 80\r\n" + REQUEST + b"\r\n"
    )
    assert body(out)["client"] == ["198.51.100.7", 5555]
    out = exchange(
        addr(proxied, 0), b"PROXY TCP6 2001:db8::9 2001:db8::1 6 443\r\n" + REQUEST + b"\r\n"
    )
    assert body(out)["client"] == ["2001:db8::9", 6]
    out = exchange(addr(proxied, 0), b"PROXY UNKNOWN\r\n" + REQUEST + b"\r\n")
    assert body(out)["client"][0] == "127.0.0.1"  # type: ignore[index]


def test_proxy_v2(proxied: BastionProcess) -> None:
    import ipaddress

    four = ipaddress.ip_address("198.51.100.8").packed + ipaddress.ip_address("203.0.113.1").packed
    tlv = b"\x01\x00\x02h2"
    out = exchange(
        addr(proxied, 0), v2(0x11, four + struct.pack("!HH", 7, 80) + tlv) + REQUEST + b"\r\n"
    )
    assert body(out)["client"] == ["198.51.100.8", 7]
    six = ipaddress.ip_address("2001:db8::8").packed + ipaddress.ip_address("2001:db8::1").packed
    out = exchange(addr(proxied, 0), v2(0x21, six + struct.pack("!HH", 8, 80)) + REQUEST + b"\r\n")
    assert body(out)["client"] == ["2001:db8::8", 8]
    local = v2(0x00, b"", command=0)
    out = exchange(addr(proxied, 0), local + REQUEST + b"\r\n")
    assert body(out)["client"][0] == "127.0.0.1"  # type: ignore[index]


def test_proxy_source_is_the_peer_for_forwarded_headers(proxied: BastionProcess) -> None:
    xff = b"X-Forwarded-For: 1.2.3.4\r\n"
    trusted = b"PROXY TCP4 192.0.2.10 203.0.113.1 5555 80\r\n"
    assert body(exchange(addr(proxied, 0), trusted + REQUEST + xff + b"\r\n"))["client"] == [
        "1.2.3.4",
        0,
    ]
    untrusted = b"PROXY TCP4 198.51.100.7 203.0.113.1 5555 80\r\n"
    assert body(exchange(addr(proxied, 0), untrusted + REQUEST + xff + b"\r\n"))["client"] == [
        "198.51.100.7",
        5555,
    ]


def test_proxy_listener_refuses_plain_http(proxied: BastionProcess) -> None:
    assert exchange(addr(proxied, 0), REQUEST + b"\r\n") == b""
    assert exchange(addr(proxied, 0), b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + REQUEST) == b""
    # a header that never ends: closed after its deadline (5 s), without a response
    started = time.monotonic()
    assert exchange(addr(proxied, 0), b"PROXY TCP4 1.2.3.4", timeout=20) == b""
    assert 3 < time.monotonic() - started < 15


def test_other_listener_does_not_read_proxy_headers(proxied: BastionProcess) -> None:
    out = exchange(addr(proxied, 1), REQUEST + b"\r\n")
    assert body(out)["client"][0] == "::1"  # type: ignore[index]
    out = exchange(
        addr(proxied, 1), b"PROXY TCP4 198.51.100.7 203.0.113.1 5555 80\r\n" + REQUEST + b"\r\n"
    )
    assert out.startswith(b"HTTP/1.1 400 ")
