"""HTTP/1.1 through the real server: raw sockets, httpx and curl."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from server import BastionProcess, serve

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


@pytest.fixture(scope="module")
def echo() -> Iterator[BastionProcess]:
    with serve(
        "http_echo:app",
        "--workers",
        "1",
        "--header-timeout",
        "1",
        "--keepalive-timeout",
        "2",
        "--max-body-size",
        "1m",
    ) as proc:
        yield proc


def raw(proc: BastionProcess, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    host, port = proc.host_port
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        raise AssertionError(f"server did not close the connection; got {b''.join(chunks)!r}")


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def one_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and decoded body of exactly one response (nothing may follow)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                assert rest == b"\r\n", rest[:200]
                break
            body += rest[:size]
            assert rest[size : size + 2] == b"\r\n"
            rest = rest[size + 2 :]
    else:
        body = rest
        assert len(body) == int(headers["content-length"]), (len(body), headers)
    return int(lines[0].split(" ", 2)[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n folded\r\n\r\n", 400),
        (b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413),
    ],
    ids=[
        "cl+te",
        "two-cl",
        "gzip-te",
        "obs-fold",
        "nul",
        "bare-cr",
        "version",
        "uri-414",
        "header-431",
        "body-413",
    ],
)
def test_bad_requests_get_status_and_close(
    echo: BastionProcess, request_bytes: bytes, status: int
) -> None:
    response = raw(echo, request_bytes)
    assert status_of(response) == status
    assert b"connection: close" in response.lower()
    assert b'"method"' not in response  # never reached the app


def test_pipelined_requests_answered_in_order(echo: BastionProcess) -> None:
    reqs = b"".join(
        b"GET /p%d HTTP/1.1\r\nHost: a\r\n%s\r\n" % (i, b"Connection: close\r\n" if i == 9 else b"")
        for i in range(10)
    )
    response = raw(echo, reqs)
    paths = re.findall(rb'"path": "(/p[0-9]+)"', response)
    assert paths == [b"/p%d" % i for i in range(10)]
    assert response.count(b"HTTP/1.1 200 OK") == 10


def test_keep_alive_with_httpx_reuses_one_connection(echo: BastionProcess) -> None:
    with httpx.Client(base_url=echo.url) as client:
        ports = set()
        for i in range(20):
            r = client.get(f"/k{i}", params={"q": "a b"})
            assert r.status_code == 200
            body = r.json()
            assert body["path"] == f"/k{i}"
            assert body["query"] == "q=a+b"
            ports.add(tuple(body["client"]))
            assert r.headers["server"] == "bastion"
            assert "date" in r.headers
        assert len(ports) == 1


def test_percent_encoded_path_and_raw_path(echo: BastionProcess) -> None:
    r = httpx.get(echo.url + "/caf%C3%A9/a%2Fb")
    body = r.json()
    assert body["path"] == "/café/a/b"
    assert body["raw_path"] == "/caf%C3%A9/a%2Fb"


def test_chunked_upload_streamed_to_the_app(echo: BastionProcess) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(100):
            yield b"y" * 1000

    r = httpx.post(echo.url + "/up", content=gen())
    assert r.json()["body_size"] == 100_000


def test_body_over_limit_while_streaming_is_413(echo: BastionProcess) -> None:
    host, port = echo.host_port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"z" * 65536 + b"\r\n"
        try:
            for _ in range(40):  # 2.5 MiB against a 1 MiB limit
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed: expected
        data = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except ConnectionResetError:
            pass
    assert status_of(data) == 413
    assert b'"method"' not in data


def test_head_has_length_but_no_body(echo: BastionProcess) -> None:
    response = raw(echo, b"HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    lengths = re.findall(rb"(?im)^content-length: *([0-9]+)\r?$", head)
    assert len(lengths) == 1 and int(lengths[0]) > 0, head  # the length a GET would have
    assert body == b""


def test_http10_client(echo: BastionProcess) -> None:
    response = raw(echo, b"GET /old HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200")
    assert json.loads(response.partition(b"\r\n\r\n")[2])["http_version"] == "1.0"


def test_streaming_response_arrives_in_pieces(echo: BastionProcess) -> None:
    arrivals = []
    with httpx.stream("GET", echo.url + "/stream") as r:
        assert r.headers["transfer-encoding"] == "chunked"
        for chunk in r.iter_raw():
            arrivals.append((time.monotonic(), chunk))
    body = b"".join(c for _, c in arrivals)
    assert body == b"".join(b"chunk%d\n" % i for i in range(5))
    assert arrivals[-1][0] - arrivals[0][0] > 0.5  # not all delivered at the end


def test_slow_header_sender_gets_408(echo: BastionProcess) -> None:
    host, port = echo.host_port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        start = time.monotonic()
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert status_of(data) == 408
        assert time.monotonic() - start < 5


def test_idle_keep_alive_connection_is_closed(echo: BastionProcess) -> None:
    host, port = echo.host_port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.2)
        sock.recv(65536)
        start = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server after the keep-alive timeout
        assert 1.0 < time.monotonic() - start < 5


def test_large_response_to_a_slow_reader(echo: BastionProcess) -> None:
    host, port = echo.host_port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        time.sleep(0.5)  # let the server hit backpressure
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    status, headers, body = one_response(b"".join(chunks))
    assert status == 200
    assert len(body) == 4 * 1024 * 1024  # the body, not the head too
    assert body == b"x" * (4 * 1024 * 1024)


@needs_curl
def test_curl_expect_100_continue_upload(echo: BastionProcess, tmp_path: object) -> None:
    data = "a" * 200_000
    out = subprocess.run(
        [
            CURL or "curl",
            "-sS",
            "-v",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "@-",
            echo.url,
        ],
        input=data.encode(),
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert b"HTTP/1.1 100 Continue" in out.stderr
    assert json.loads(out.stdout)["body_size"] == 200_000


@needs_curl
def test_curl_chunked_upload(echo: BastionProcess) -> None:
    out = subprocess.run(
        [
            CURL or "curl",
            "-sS",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            echo.url + "/c",
        ],
        input=b"q" * 50_000,
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert json.loads(out.stdout)["body_size"] == 50_000


@pytest.mark.parametrize("target", ["http_echo:injector", "http_echo:wsgi_injector"])
def test_header_injection_by_the_app_is_a_500(target: str) -> None:
    with serve(target, "--workers", "1") as proc:
        response = raw(proc, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 500
    assert b"stolen" not in response
    assert b"should never be sent" not in response


def test_disconnect_reaches_the_app_and_server_keeps_serving(echo: BastionProcess) -> None:
    host, port = echo.host_port
    for i in range(5):
        path = f"/ticks/{i}"
        mark = len(echo.log)
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            received = b""
            while b"tick" not in received:
                chunk = sock.recv(4096)
                assert chunk, received
                received += chunk
        # the app, streaming and waiting in receive(), is told the client went away
        # (not "\n" after it: the worker's own log lines may interleave with the app's print)
        echo.wait_for_log(f"http_echo: http.disconnect on {path}(?!\\d)", timeout=10, start=mark)
    r = httpx.get(echo.url + "/after")
    assert r.status_code == 200 and r.json()["path"] == "/after"
    # an app that stops because it was told the client left did nothing wrong
    assert "returned before its response was complete" not in echo.log


def test_disconnect_reaches_an_app_that_is_not_writing(echo: BastionProcess) -> None:
    host, port = echo.host_port
    path = "/wait-disconnect/idle"
    mark = len(echo.log)
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        echo.wait_for_log(f"http_echo: waiting on {path}\n", timeout=10, start=mark)
    echo.wait_for_log(f"http_echo: http.disconnect on {path}\n", timeout=3, start=mark)


def test_asgi_headers_given_as_lists_are_accepted() -> None:
    with serve("http_echo:header_lists", "--workers", "1") as proc:
        r = httpx.get(proc.url)
    assert r.status_code == 200
    assert r.text == "lists ok"
    assert r.headers["x-pair"] == "tuple"
