"""Real frameworks served by the real ``bastion`` process.

Flask and Django run under WSGI in both modes (inline and threads), FastAPI and Starlette
under ASGI; each app (tests/e2e/apps/fw_*) answers the same routes with the same JSON,
so every check below runs against every framework, through httpx and, for uploads and
streaming, through curl.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from server import BastionProcess, child_env, serve

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

MARKER = "fw-boom-marker"


@dataclass(frozen=True)
class Case:
    name: str  # the framework name the app reports
    target: str
    args: tuple[str, ...]

    @property
    def threaded(self) -> bool:
        return "threads" in self.args or "--wsgi-mode" not in self.args


CASES = [
    Case("flask", "fw_flask:app", ("--wsgi-mode", "inline", "--workers", "2")),
    Case("flask", "fw_flask:app", ("--wsgi-mode", "threads", "--threads", "4", "--workers", "1")),
    Case("django", "fw_django.wsgi:application", ("--wsgi-mode", "inline", "--workers", "2")),
    Case(
        "django",
        "fw_django.wsgi:application",
        ("--wsgi-mode", "threads", "--threads", "4", "--workers", "1"),
    ),
    Case("django", "fw_django.asgi:application", ("--workers", "1")),
    Case("fastapi", "fw_fastapi:app", ("--workers", "1")),
    Case("starlette", "fw_starlette:app", ("--workers", "2")),
]


def _case_id(case: Case) -> str:
    if "--wsgi-mode" in case.args:
        return f"{case.name}-{case.args[case.args.index('--wsgi-mode') + 1]}"
    if case.target.endswith(".asgi:application"):
        return f"{case.name}-asgi"
    return case.name


@pytest.fixture(scope="module", params=CASES, ids=_case_id)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Case, BastionProcess]]:
    case: Case = request.param
    with serve(case.target, *case.args) as proc:
        yield case, proc


@pytest.fixture
def client(served: tuple[Case, BastionProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1].url, timeout=15.0) as c:
        yield c


@pytest.fixture(scope="module")
def five_mb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "five-mb.bin"
    path.write_bytes(os.urandom(5 * 1024 * 1024))
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- plain requests ----------------------------------------------------------------------


def test_json_endpoint(served: tuple[Case, BastionProcess], client: httpx.Client) -> None:
    case, proc = served
    r = client.get("/json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["framework"] == case.name
    assert body["message"] == "hello"
    assert body["pid"] != proc.pid  # answered by a worker, not the supervisor


def test_head_has_headers_but_no_body(client: httpx.Client) -> None:
    get = client.get("/json")
    head = client.head("/json")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if "content-length" in head.headers:
        assert int(head.headers["content-length"]) == len(get.content)


def test_urlencoded_form(client: httpx.Client) -> None:
    r = client.post("/form", data={"name": "Zoë Ångström", "colour": "teal & gold"})
    assert r.status_code == 200
    assert r.json() == {"name": "Zoë Ångström", "colour": "teal & gold"}


def test_query_string(client: httpx.Client) -> None:
    r = client.get("/query?a=1&a=2&b=hello%20world&c=%C3%A9t%C3%A9")
    assert r.status_code == 200
    body = r.json()
    assert body["query_string"] == "a=1&a=2&b=hello%20world&c=%C3%A9t%C3%A9"
    assert body["args"] == {"a": ["1", "2"], "b": ["hello world"], "c": ["été"]}


def test_request_headers_reach_the_app(client: httpx.Client) -> None:
    r = client.get("/headers", headers={"X-Echo": "echo me", "User-Agent": "fw-test/1.0"})
    assert r.status_code == 200
    assert r.json() == {"x_echo": "echo me", "user_agent": "fw-test/1.0"}


def test_unknown_route_is_404(client: httpx.Client) -> None:
    assert client.get("/no/such/route").status_code == 404


def test_exception_is_500_without_traceback_but_logged(
    served: tuple[Case, BastionProcess], client: httpx.Client
) -> None:
    _, proc = served
    mark = len(proc.log)
    r = client.get("/boom")
    assert r.status_code == 500
    for leak in ("Traceback", MARKER, "RuntimeError", ".py"):
        assert leak not in r.text
    proc.wait_for_log(MARKER, start=mark)
    proc.wait_for_log("Traceback", start=mark)
    time.sleep(0.5)  # a second copy, from a second handler, would be out by now
    tracebacks = proc.log[mark:].count("Traceback (most recent call last)")
    assert tracebacks == 1, f"the traceback was logged {tracebacks} times:\n{proc.log[mark:]}"


def test_keep_alive_reuses_one_connection(
    served: tuple[Case, BastionProcess], client: httpx.Client
) -> None:
    client_ports = set()
    pids = set()
    for i in range(8):
        if i % 4 == 1:
            r = client.head("/json")
        elif i % 4 == 2:
            r = client.post("/form", data={"name": str(i), "colour": "red"})
        else:
            r = client.get("/json")
            pids.add(r.json()["pid"])
        assert r.status_code == 200
        assert r.headers.get("connection", "").lower() != "close"
        stream = r.extensions["network_stream"]
        client_ports.add(stream.get_extra_info("client_addr")[1])
    assert len(client_ports) == 1, "every request should travel on the same connection"
    assert len(pids) == 1, "one connection is served by one worker"


# -- uploads -----------------------------------------------------------------------------


def test_upload_5mb_with_httpx(client: httpx.Client, five_mb: Path) -> None:
    data = five_mb.read_bytes()
    r = client.post("/upload", files={"file": ("five-mb.bin", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert r.json() == {"filename": "five-mb.bin", "size": len(data), "sha256": _sha256(data)}


@needs_curl
def test_upload_5mb_with_curl(served: tuple[Case, BastionProcess], five_mb: Path) -> None:
    _, proc = served
    out = subprocess.run(
        [CURL or "curl", "-sS", "--max-time", "30", "-F", f"file=@{five_mb}", f"{proc.url}/upload"],
        capture_output=True,
        timeout=40,
        check=True,
    )
    data = five_mb.read_bytes()
    body = json.loads(out.stdout)
    assert body == {"filename": "five-mb.bin", "size": len(data), "sha256": _sha256(data)}


# -- streaming ---------------------------------------------------------------------------

CHUNKS = 4
DELAY = 0.4
STREAM_PATH = f"/stream?n={CHUNKS}&delay={DELAY}"
EXPECTED_STREAM = "".join(f"chunk {i}\n" for i in range(CHUNKS))


def _assert_incremental(arrivals: list[tuple[float, bytes]]) -> None:
    """The first chunk must arrive long before the last one was even produced."""
    text = b"".join(piece for _, piece in arrivals).decode()
    assert text == EXPECTED_STREAM
    first = next(t for t, piece in arrivals if b"chunk 0" in piece)
    last = arrivals[-1][0]
    # the app sleeps DELAY between chunks: (CHUNKS - 1) * DELAY = 1.2 s from first to last
    assert last - first > (CHUNKS - 1) * DELAY * 0.6, arrivals
    assert len({round(t, 1) for t, _ in arrivals}) >= 3, arrivals


def test_streaming_arrives_incrementally_httpx(client: httpx.Client) -> None:
    arrivals: list[tuple[float, bytes]] = []
    with client.stream("GET", STREAM_PATH) as r:
        assert r.status_code == 200
        for piece in r.iter_raw():
            arrivals.append((time.monotonic(), piece))
    _assert_incremental(arrivals)


@needs_curl
def test_streaming_arrives_incrementally_curl(served: tuple[Case, BastionProcess]) -> None:
    _, proc = served
    arrivals: list[tuple[float, bytes]] = []
    with subprocess.Popen(
        [CURL or "curl", "-sSN", "--max-time", "20", f"{proc.url}{STREAM_PATH}"],
        stdout=subprocess.PIPE,
    ) as curl:
        assert curl.stdout is not None
        for line in curl.stdout:  # ends when curl exits (at most --max-time)
            arrivals.append((time.monotonic(), line))
        assert curl.wait(30) == 0
    _assert_incremental(arrivals)


def test_concurrent_streams_overlap(served: tuple[Case, BastionProcess]) -> None:
    """A second request is answered while a slow one is still running (threads, ASGI)."""
    case, proc = served
    if not case.threaded:
        pytest.skip("inline WSGI runs one request at a time per worker, by design")
    slow = "/stream?n=2&delay=2.0"  # "chunk 0", then "chunk 1" two seconds later
    with (
        httpx.Client(base_url=proc.url, timeout=15.0) as a,
        httpx.Client(base_url=proc.url, timeout=15.0) as b,
        a.stream("GET", slow) as first,
    ):
        pieces = first.iter_raw()
        assert next(pieces).startswith(b"chunk 0")
        started = time.monotonic()
        assert b.get("/json").status_code == 200
        answered = time.monotonic() - started
        assert b"".join(pieces).endswith(b"chunk 1\n")
    assert answered < 1.5, f"the second request waited {answered:.2f}s for the first"


def test_endless_event_stream_ends_when_the_client_goes(
    served: tuple[Case, BastionProcess],
) -> None:
    """An endless server-sent-events endpoint that never checks for a disconnect itself
    ends soon after its client leaves: under ASGI its next send() raises an OSError (ASGI
    2.4, which Starlette relies on), under WSGI the server stops iterating and calls the
    response's close(), in both modes."""
    case, proc = served
    ident = uuid.uuid4().hex
    # inline WSGI runs the generator on the event loop, which notices the client between
    # rounds of chunks: keep the rounds short
    delay = 0.05 if case.threaded else 0.005
    host, port = proc.host_port
    mark = len(proc.log)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            f"GET /events?id={ident}&delay={delay} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
        got = b""
        while got.count(b"data: tick") < 3:
            data = sock.recv(65536)
            assert data, got
            got += data
        assert b"text/event-stream" in got.partition(b"\r\n\r\n")[0]
    gone = time.monotonic()
    proc.wait_for_log(f"events ended {ident}", timeout=10, start=mark)
    if case.name in ("flask", "django") and "--wsgi-mode" in case.args:
        proc.wait_for_log(f"events closed {ident}", timeout=10, start=mark)  # close() called
    took = time.monotonic() - gone
    assert took < 3.0, f"the stream ran {took:.2f}s after its client left"
    assert "Traceback" not in proc.log[mark:]


# -- mounted below a prefix --------------------------------------------------------------

ROOT_CASES = [
    Case("flask", "fw_flask:app", ("--wsgi-mode", "threads", "--workers", "1")),
    Case("django", "fw_django.wsgi:application", ("--wsgi-mode", "inline", "--workers", "1")),
    Case("fastapi", "fw_fastapi:app", ("--workers", "1")),
    Case("starlette", "fw_starlette:app", ("--workers", "1")),
]


@pytest.mark.parametrize("case", ROOT_CASES, ids=lambda c: c.name)
def test_root_path_prefixes_generated_urls(case: Case) -> None:
    with (
        serve(case.target, *case.args, "--root-path", "/prefix") as proc,
        httpx.Client(base_url=proc.url, timeout=15.0) as c,
    ):
        # a proxy may pass the prefix on (/prefix/url) or strip it (/url): same result
        for path in ("/prefix/url", "/url"):
            r = c.get(path)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["json_url"] == "/prefix/json", path
            assert body["root_path"] == "/prefix", path
        assert c.get("/prefix/json").json()["framework"] == case.name


# -- the examples and the demo -----------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


EXAMPLE_APPS = [
    ("hello_asgi:app", (), "Hello, world!"),
    ("hello_wsgi:app", (), "Hello, world!"),
    ("flask_app:app", (), "Hello from Flask!"),
    ("fastapi_app:app", (), "Hello from FastAPI!"),
    ("starlette_app:app", (), "Hello from Starlette!"),
    ("mysite.wsgi:application", ("--app-dir", "django_site"), "Hello from Django!"),
]


@pytest.mark.parametrize(
    ("target", "extra", "expect"), EXAMPLE_APPS, ids=[a[0].split(".")[0] for a in EXAMPLE_APPS]
)
def test_examples_serve_their_index(target: str, extra: tuple[str, ...], expect: str) -> None:
    with (
        serve(target, *extra, "--workers", "1", cwd=EXAMPLES) as proc,
        httpx.Client(base_url=proc.url, timeout=15.0) as c,
    ):
        r = c.get("/")
        assert r.status_code == 200
        assert expect in r.text


def test_demo_with_its_config_file() -> None:
    """What ``make run`` serves, on port 0 instead of 8000 (flags override the file)."""
    demo = EXAMPLES / "demo"
    args = ["serve", "-c", "bastion.toml", "--bind", "127.0.0.1:0"]
    with (
        BastionProcess(args, cwd=demo) as proc,
        httpx.Client(base_url=proc.url, timeout=15.0) as c,
    ):
        assert "with 2 workers" in proc.log
        page = c.get("/")
        assert page.status_code == 200
        assert "bastion demo" in page.text
        assert f"curl -s {proc.url}/api/whoami" in page.text  # its own address, not :8000
        who = c.get("/api/whoami").json()
        assert f'worker pid <span class="big">{who["worker_pid"]}</span>' in page.text
        assert who["supervisor_pid"] == proc.pid
        # compression and security headers come from bastion.toml, not from the app
        assert page.headers["content-encoding"] in ("gzip", "br", "zstd")
        assert page.headers["x-content-type-options"] == "nosniff"
        # /static/ is a static route: bastion answers from ./static with validators
        css = c.get("/static/demo.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert css.headers["cache-control"] == "public, max-age=3600"
        assert css.text == (demo / "static" / "demo.css").read_text()
        etag = css.headers["etag"]
        assert c.get("/static/demo.css", headers={"If-None-Match": etag}).status_code == 304
        upload = c.post("/upload", files={"file": ("a.txt", b"bastion")}).json()
        assert upload["sha256"] == _sha256(b"bastion")
        with c.stream("GET", "/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            first = next(r.iter_lines())
        assert first.startswith("data: tick 1/")
        proc.wait_for_log(r'"GET /api/whoami HTTP/1.1" 200')  # the access log is on


def test_demo_config_passes_check() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", "bastion.toml"],
        cwd=EXAMPLES / "demo",
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert 'target = "app:app"' in out.stdout
    assert "count = 2" in out.stdout
