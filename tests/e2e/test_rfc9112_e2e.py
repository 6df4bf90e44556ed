"""RFC 9112 request rules and path normalisation through a real ``bastion`` with routes,
over raw sockets (an HTTP client library would tidy the request line first)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server import BastionProcess

SITE = """
[app]
target = "http_echo:app"

[[routes]]
host = "abs.example"
path = "/"
return = {{ body = "abs.example site" }}

[[routes]]
path = "/admin"
match = "exact"
return = {{ body = "admin exact" }}

[[routes]]
path = "/admin/"
redirect = {{ to = "/login?next={{path}}", status = 302 }}

[[routes]]
path = "/static/"
static = {{ root = "{static}" }}

[[routes]]
path = "/"
app = "default"
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    tmp = tmp_path_factory.mktemp("rfc9112")
    static = tmp / "public"
    (static / "css").mkdir(parents=True)
    (static / "css" / "site.css").write_text("body { color: red }\n")
    (tmp / "secret.txt").write_text("not to be served\n")
    config = tmp / "bastion.toml"
    config.write_text(SITE.format(static=static))
    proc = BastionProcess(["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"])
    with proc:
        yield proc


def exchange(site: BastionProcess, raw: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``raw``, read until the server closes: (what came back, seconds it took)."""
    start = time.monotonic()
    with socket.create_connection(site.host_port, timeout=timeout) as sock:
        sock.sendall(raw)
        out = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            out += data
    return out, time.monotonic() - start


def get(
    site: BastionProcess, target: bytes, host: bytes = b"t.example"
) -> tuple[int, dict[str, str], bytes]:
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    out, _ = exchange(site, raw)
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def status(out: bytes) -> int:
    return int(out.split(b" ", 2)[1])


# -- path normalisation: every spelling reaches the same route --------------------------
@pytest.mark.parametrize(
    "target",
    [
        b"/admin",
        b"//admin",
        b"/%61dmin",
        b"///admin",
    ],
)
def test_every_spelling_of_admin_reaches_the_exact_route(
    site: BastionProcess, target: bytes
) -> None:
    code, _, body = get(site, target)
    assert (code, body) == (200, b"admin exact")


@pytest.mark.parametrize(
    "target",
    [
        b"/admin/users",
        b"//admin/users",
        b"/admin//users",
        b"/%61dmin/users",
        b"/%61%64%6d%69%6e/users",
        # an encoded slash is routed as a slash: the app's PATH_INFO has "/admin/users",
        # so a rule on /admin/ must hold for it (access control depends on it)
        b"/admin%2Fusers",
    ],
)
def test_every_spelling_under_admin_reaches_the_prefix_route(
    site: BastionProcess, target: bytes
) -> None:
    code, headers, _ = get(site, target)
    assert code == 302
    assert headers["location"] == "/login?next=/users"  # {path}: the rest after the prefix


@pytest.mark.parametrize(
    ("target", "app_path"),
    [
        (b"/administrator", "/administrator"),
        (b"/%2561dmin", "/%61dmin"),  # "%25" is "%": no second decoding
    ],
)
def test_other_paths_reach_the_catch_all_app_with_the_raw_path(
    site: BastionProcess, target: bytes, app_path: str
) -> None:
    code, _, body = get(site, target)
    assert code == 200
    seen = json.loads(body)
    assert seen["raw_path"] == target.decode()  # the app still gets the raw path
    assert seen["path"] == app_path


def test_the_app_gets_the_raw_path_of_a_normalised_request(site: BastionProcess) -> None:
    code, _, body = get(site, b"//api//v1/%69tems")
    assert code == 200
    assert json.loads(body)["raw_path"] == "//api//v1/%69tems"


@pytest.mark.parametrize(
    "target",
    [
        b"/./admin",
        b"/admin/../admin",
        b"/%2e/admin",
        b"/x/%2E%2E/admin",
        b"/./admin/./users",
        b"/admin/x/../users",
        b"/admin/..",
        b"/admin/.",
        b"//api/./v1/../items",
        b"/a/..%2Fadmin",
    ],
)
def test_dot_segments_are_refused(site: BastionProcess, target: bytes) -> None:
    """Clients remove them (RFC 3986 5.2.4); left in, the path would route as one path
    and read as another in the app (docs/routing.md)."""
    code, _, _ = get(site, target)
    assert code == 400


@pytest.mark.parametrize(
    "target",
    [
        b"/static/css/site.css",
        b"//static//css/site.css",
        b"/%73tatic/css/%73ite.css",
    ],
)
def test_static_files_match_the_normalised_path(site: BastionProcess, target: bytes) -> None:
    code, _, body = get(site, target)
    assert (code, body) == (200, b"body { color: red }\n")


def test_dot_segments_cannot_leave_the_static_route(site: BastionProcess) -> None:
    for target in (b"/static/../secret.txt", b"/static/%2e%2e/secret.txt"):
        code, _, body = get(site, target)
        assert code == 400 and b"not to be served" not in body


# -- Host and the request line ------------------------------------------------------------
def test_http11_request_without_host_is_400(site: BastionProcess) -> None:
    out, _ = exchange(site, b"GET /admin HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status(out) == 400


def test_absolute_form_authority_is_what_routing_and_the_app_see(site: BastionProcess) -> None:
    code, _, body = get(site, b"http://abs.example/anything", host=b"other.example")
    assert (code, body) == (200, b"abs.example site")
    code, _, body = get(site, b"http://t.example", host=b"abs.example")
    assert code == 200  # no path: "/", and the host is t.example: the app
    seen = json.loads(body)
    assert seen["raw_path"] == "/"
    assert ["host", "t.example"] in seen["headers"]


@pytest.mark.parametrize(
    "line",
    [
        b"GET  /admin HTTP/1.1",
        b"GET /admin  HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET t.example:80 HTTP/1.1",
        b"GET /admin#x HTTP/1.1",
    ],
)
def test_malformed_request_lines_are_400(site: BastionProcess, line: bytes) -> None:
    out, _ = exchange(site, line + b"\r\nHost: t.example\r\n\r\n")
    assert status(out) == 400


def test_http09_line_is_answered_at_once(site: BastionProcess) -> None:
    out, took = exchange(site, b"GET /admin\r\n", timeout=20)
    assert status(out) == 505
    assert took < 5  # the header timeout is 30 s


# -- chunk extensions -----------------------------------------------------------------------
def test_a_1mb_chunk_extension_is_413_and_closed(site: BastionProcess) -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: t.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(site.host_port, timeout=10) as sock:
        sock.sendall(head)
        try:
            sock.sendall(b"5;" + b"x" * (1 << 20) + b"\r\nhello\r\n0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was sent
        out = b""
        try:
            while data := sock.recv(65536):
                out += data
        except ConnectionResetError:
            pass
    assert status(out) == 413


def test_chunks_with_small_extensions_are_served(site: BastionProcess) -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: t.example\r\nTransfer-Encoding: chunked\r\n"
    chunks = b"".join(b"3;i=%d\r\nabc\r\n" % i for i in range(500))
    out, _ = exchange(site, head + b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert status(out) == 200
    assert json.loads(out.partition(b"\r\n\r\n")[2])["body_size"] == 1500


def test_site_log_has_no_errors(site: BastionProcess) -> None:
    assert "Traceback" not in site.log
    assert Path(site.cwd).is_dir()
