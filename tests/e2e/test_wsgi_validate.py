"""PEP 3333 conformance: a ``wsgiref.validate``-wrapped app through the real server.

The validator raises ``AssertionError`` into the server on any breach of the WSGI
contract (a missing environ key, a non-str CGI value, an unclosed iterator, input read
the wrong way...), and the app turns every ``WSGIWarning`` into an error too. So each
route answering 200, with no traceback or validator message in the server's log, shows
that bastion keeps its side of the contract. Runs in both WSGI modes.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server import BastionProcess, serve

BODY = b"first line\nsecond line, longer than seven bytes\n\nno newline at the end"
BODY_LINES = BODY.splitlines(keepends=True)

# What must never show up in the server's log while these tests run.
VALIDATOR_NOISE = ("Traceback", "AssertionError", "WSGIWarning", "garbage collected")


@pytest.fixture(scope="module")
def served_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("validate") / "payload.bin"
    path.write_bytes(os.urandom(300_000))
    return path


@pytest.fixture(scope="module", params=["inline", "threads"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(mode: str, served_file: Path) -> Iterator[BastionProcess]:
    proc = serve(
        "fw_wsgi_validate:app",
        "--interface",
        "wsgi",
        "--wsgi-mode",
        mode,
        "--workers",
        "1",
        env={"FW_VALIDATE_FILE": str(served_file)},
    ).start()
    try:
        yield proc
    finally:
        proc.stop()
    log = proc.log  # including whatever the workers said while shutting down
    for noise in VALIDATOR_NOISE:
        assert noise not in log, f"{noise!r} in the server log:\n{log}"


@pytest.fixture
def client(server: BastionProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15.0) as c:
        yield c


def _ok(r: httpx.Response) -> httpx.Response:
    assert r.status_code == 200, f"{r.status_code}: {r.text}"
    return r


def test_get(client: httpx.Client) -> None:
    assert _ok(client.get("/hello")).text == "hello from a validated app\n"


def test_head(client: httpx.Client) -> None:
    r = _ok(client.head("/hello"))
    assert r.content == b""
    assert r.headers["content-length"] == str(len("hello from a validated app\n"))


@pytest.mark.parametrize("route", ["/read", "/readline", "/readline-sized", "/readlines", "/iter"])
def test_post_body_each_way(client: httpx.Client, route: str) -> None:
    body = _ok(client.post(route, content=BODY)).json()
    assert body["size"] == len(BODY)
    assert body["sha256"] == hashlib.sha256(BODY).hexdigest()
    if route in ("/readline", "/readlines", "/iter"):
        assert body["lines"] == len(BODY_LINES)
    if route == "/readline-sized":  # readline(7) splits long lines into 7-byte pieces
        assert body["lines"] == sum((len(line) + 6) // 7 for line in BODY_LINES)


def test_post_large_body_read(client: httpx.Client) -> None:
    data = os.urandom(2 * 1024 * 1024 + 17)
    body = _ok(client.post("/read", content=data)).json()
    assert body == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_post_chunked_body_read_to_end(client: httpx.Client) -> None:
    def pieces() -> Iterator[bytes]:  # no length known: httpx sends it chunked
        yield BODY[:10]
        yield BODY[10:]

    body = _ok(client.post("/iter", content=pieces())).json()
    assert body["size"] == len(BODY)
    assert body["lines"] == len(BODY_LINES)


def test_write_callable(client: httpx.Client) -> None:
    assert _ok(client.get("/write")).text == "written-1 written-2 returned"


def test_file_wrapper_with_a_real_file(client: httpx.Client, served_file: Path) -> None:
    r = _ok(client.get("/file"))
    assert r.headers["content-length"] == str(served_file.stat().st_size)
    assert r.content == served_file.read_bytes()


def test_wsgi_errors_reach_the_log(client: httpx.Client, server: BastionProcess) -> None:
    mark = len(server.log)
    assert _ok(client.get("/errors")).text == "logged\n"
    server.wait_for_log("fw-validate: a line written to wsgi.errors", start=mark)


def test_start_response_again_with_exc_info(client: httpx.Client) -> None:
    r = client.get("/exc-info")
    assert r.status_code == 503
    assert r.text == "recovered"


def test_environ(client: httpx.Client, server: BastionProcess, mode: str) -> None:
    host, port = server.host_port
    env = _ok(client.get("/environ/caf%C3%A9", params={"q": "a b"})).json()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    # PEP 3333: the decoded path as a "native string", its bytes read as latin-1
    assert env["PATH_INFO"] == "/environ/café".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "q=a+b"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_PORT"] == str(port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_HOST"] == f"{host}:{port}"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is (mode == "threads")


def test_http10_request(server: BastionProcess) -> None:
    """An HTTP/1.0 client with no Host header still gets a valid environ and a reply."""
    with socket.create_connection(server.host_port, timeout=10) as sock:
        sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):  # HTTP/1.0: the server closes when done
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert body == b"hello from a validated app\n"


def test_unwrapped_file_wrapper(served_file: Path) -> None:
    """Unvalidated, the server sees its own file_wrapper object (its zero-copy path)."""
    with (
        serve(
            "fw_wsgi_validate:plain",
            "--workers",
            "1",
            env={"FW_VALIDATE_FILE": str(served_file)},
        ) as proc,
        httpx.Client(base_url=proc.url, timeout=15.0) as c,
    ):
        for _ in range(3):  # and again on the same connection
            r = _ok(c.get("/file"))
            assert r.content == served_file.read_bytes()
        assert "Traceback" not in proc.log


def test_unread_body_does_not_leak_into_the_next_request(client: httpx.Client) -> None:
    """An app that never reads the body; the next request on the connection is intact."""
    for size in (10, 300_000):
        r = client.post(
            "/not-here", content=b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n" + b"x" * size
        )
        assert r.status_code == 404
        assert _ok(client.get("/hello")).text == "hello from a validated app\n"


def test_pipelined_requests_on_one_socket(server: BastionProcess) -> None:
    """Two requests sent at once, the first with a body: two answers, in order."""
    body = b"a=1\nb=2\n"
    wire = (
        b"POST /readline HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (len(body), body)
    )
    with socket.create_connection(server.host_port, timeout=10) as sock:
        sock.sendall(wire)
        data = b""
        while chunk := sock.recv(65536):  # the server closes after the second answer
            data += chunk
    assert data.count(b"HTTP/1.1 200 ") == 2, data
    first, second = data.split(b"HTTP/1.1 200 ")[1:]
    assert b'"lines": 2' in first
    assert second.endswith(b"hello from a validated app\n")
