"""Static files through the real ``bastion`` process: httpx, curl, raw sockets, REDbot and
headless Chromium.

One server (one worker) serves a site generated in a temporary directory under three
routes: ``/s/`` with the defaults, ``/l/`` with a listing, a custom 404 page and a
Cache-Control, and ``/site/`` for the browser test. A secret file is planted next to the
root; no traversal attempt may ever return it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard
from browser import chromium
from server import BastionProcess, serve

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
REDBOT = Path(sys.executable).with_name("redbot")

SECRET = "TOPSECRET-7f3a9c"
CSS = "body { color: rgb(1, 2, 3); }\n" * 40
JS = "document.getElementById('status').textContent = 'js ok';\n" + "// padding\n" * 50


def _png(width: int, height: int) -> bytes:
    """A valid RGB PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x10\x80\xf0" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def build_site(base: Path) -> Path:
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / ".git").mkdir()
    (base / "secret.txt").write_text(SECRET)
    (base / "root-evil").mkdir()
    (base / "root-evil" / "secret.txt").write_text(SECRET)
    (root / ".env").write_text(SECRET)
    (root / ".git" / "config").write_text(SECRET)
    os.symlink(base / "secret.txt", root / "link.txt")
    os.symlink(base, root / "linkdir")
    (root / "sub" / "page.txt").write_text("a page\n")
    (root / "docs" / "index.html").write_text("<h1>docs</h1>\n")
    (root / "style.css").write_text(CSS)
    (root / "style.css.gz").write_bytes(gzip.compress(CSS.encode(), 9))
    (root / "data.txt").write_bytes(bytes(range(48, 58)) * 100)  # "0123456789" x 100
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "missing.html").write_text("<p>nothing here</p>\n")
    (root / "index.html").write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title>"
        "<link rel='stylesheet' href='style.css'><link rel='icon' href='data:,'></head>"
        "<body><p id='status'>no js</p><img id='logo' src='img/logo.png' alt='logo'>"
        "<script src='app.js'></script></body></html>\n"
    )
    (root / "app.js").write_text(JS)
    # a file with a zstd sibling only (the others get none, so the clients that accept
    # zstd by default, httpx, curl and Chromium, keep getting what those tests expect)
    (root / "lib.js").write_text(JS)
    (root / "lib.js.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(JS.encode()))
    (root / "img").mkdir()
    (root / "img" / "logo.png").write_bytes(_png(16, 8))
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BastionProcess, Path]]:
    base = tmp_path_factory.mktemp("static")
    root = build_site(base)
    config = base / "bastion.toml"
    config.write_text(
        f"""
[server]
bind = ["127.0.0.1:0"]

[workers]
count = 1

[[routes]]
path = "/s/"
static = {{ root = {json.dumps(str(root))} }}

[[routes]]
path = "/l/"
static = {{ root = {json.dumps(str(root))}, listing = true, not_found = "missing.html", \
cache_control = "max-age=60" }}

[[routes]]
path = "/site/"
static = {{ root = {json.dumps(str(root))}, cache_control = "no-cache" }}
"""
    )
    with serve("-c", str(config)) as proc:
        yield proc, root


@pytest.fixture
def server(site: tuple[BastionProcess, Path]) -> BastionProcess:
    return site[0]


@pytest.fixture
def root(site: tuple[BastionProcess, Path]) -> Path:
    return site[1]


@pytest.fixture
def client(server: BastionProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def raw(server: BastionProcess, target: bytes, extra: bytes = b"") -> bytes:
    """One request with an exact target on a fresh connection; the whole response."""
    host, port = server.host_port
    data = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n"
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run([CURL, "-sS", *args], capture_output=True, timeout=20, check=True)


# -- plain responses ---------------------------------------------------------------------
def test_file_headers_and_body(client: httpx.Client) -> None:
    r = client.get("/s/style.css", headers={"accept-encoding": "identity"})
    assert r.status_code == 200 and r.text == CSS
    assert r.headers["content-type"] == "text/css; charset=utf-8"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"].startswith('"')
    assert r.headers["vary"] == "accept-encoding"
    assert "content-encoding" not in r.headers
    assert int(r.headers["content-length"]) == len(CSS)


def test_large_file_is_whole(client: httpx.Client, root: Path) -> None:
    r = client.get("/s/big.bin")
    assert r.status_code == 200
    assert (
        hashlib.sha256(r.content).digest()
        == hashlib.sha256((root / "big.bin").read_bytes()).digest()
    )


def test_head_and_405(client: httpx.Client) -> None:
    r = client.head("/s/big.bin")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(3 * 1024 * 1024 + 17)
    r = client.post("/s/style.css", content=b"x")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_precompressed(client: httpx.Client) -> None:
    r = client.get("/s/style.css", headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.text == CSS  # httpx decodes it
    assert r.headers["vary"] == "accept-encoding"
    plain = client.get("/s/style.css", headers={"accept-encoding": "gzip;q=0"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["etag"] != r.headers["etag"]


def test_precompressed_zstd(client: httpx.Client, root: Path) -> None:
    zst = (root / "lib.js.zst").read_bytes()
    with client.stream("GET", "/s/lib.js", headers={"accept-encoding": "zstd"}) as r:
        wire = b"".join(r.iter_raw())
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "zstd"
    assert r.headers["content-length"] == str(len(zst))
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["vary"] == "accept-encoding"
    assert wire == zst
    assert client.get("/s/lib.js", headers={"accept-encoding": "zstd"}).text == JS  # decoded
    plain = client.get("/s/lib.js", headers={"accept-encoding": "gzip, br"})
    assert "content-encoding" not in plain.headers and plain.text == JS


@needs_curl
def test_precompressed_with_curl(server: BastionProcess) -> None:
    out = curl("-i", "--compressed", f"{server.url}/s/style.css").stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    assert body.decode() == CSS


def test_index_redirect_listing_and_404_page(client: httpx.Client) -> None:
    assert client.get("/s/docs/").text == "<h1>docs</h1>\n"
    r = client.get("/s/docs?a=1")
    assert r.status_code == 301 and r.headers["location"] == "/s/docs/?a=1"
    assert client.get("/s/sub/").status_code == 404  # listing is off by default
    r = client.get("/l/sub/")
    assert r.status_code == 200 and 'href="page.txt"' in r.text
    r = client.get("/l/")
    assert ".env" not in r.text and ".git" not in r.text and "link.txt" not in r.text
    r = client.get("/l/no-such-file")
    assert r.status_code == 404 and r.text == "<p>nothing here</p>\n"
    assert client.get("/l/style.css").headers["cache-control"] == "max-age=60"


# -- conditional requests ---------------------------------------------------------------
def test_conditionals_with_httpx(client: httpx.Client) -> None:
    first = client.get("/l/data.txt")
    etag, lm = first.headers["etag"], first.headers["last-modified"]
    cases = [
        ({"if-none-match": etag}, 304),
        ({"if-none-match": f'"other", W/{etag}'}, 304),
        ({"if-none-match": "*"}, 304),
        ({"if-none-match": '"other"'}, 200),
        ({"if-modified-since": lm}, 304),
        ({"if-modified-since": "Sun, 06 Nov 1994 08:49:37 GMT"}, 200),
        ({"if-none-match": '"other"', "if-modified-since": lm}, 200),  # INM wins
        ({"if-match": etag}, 200),
        ({"if-match": '"other"'}, 412),
        ({"if-match": f"W/{etag}"}, 412),  # If-Match compares strongly
        ({"if-unmodified-since": lm}, 200),
        ({"if-unmodified-since": "Sun, 06 Nov 1994 08:49:37 GMT"}, 412),
        ({"if-match": '"other"', "if-none-match": etag}, 412),
    ]
    for headers, status in cases:
        r = client.get("/l/data.txt", headers=headers)
        assert r.status_code == status, (headers, r.status_code)
        if status == 304:
            assert r.content == b""
            assert r.headers["etag"] == etag
            assert r.headers["cache-control"] == "max-age=60"
            assert "content-length" not in r.headers
    assert client.head("/l/data.txt", headers={"if-none-match": etag}).status_code == 304


@needs_curl
def test_conditionals_with_curl(server: BastionProcess) -> None:
    url = f"{server.url}/s/data.txt"
    head = curl("-sI", url).stdout.decode()
    etag = next(
        line.split(":", 1)[1].strip() for line in head.splitlines() if line.startswith("etag")
    )
    assert (
        curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}", url).stdout
        == b"304"
    )
    assert (
        curl("-o", "/dev/null", "-w", "%{http_code}", "-H", 'If-Match: "x"', url).stdout == b"412"
    )
    lm = next(
        line.split(":", 1)[1].strip()
        for line in head.splitlines()
        if line.startswith("last-modified")
    )

    def code(*args: str) -> bytes:
        return curl("-o", "/dev/null", "-w", "%{http_code}", *args, url).stdout

    assert code("-z", lm) == b"304"  # curl -z DATE sends If-Modified-Since
    assert code("-z", "1 Jan 1990") == b"200"
    assert code("-H", f"If-Unmodified-Since: {lm}") == b"200"
    assert code("-H", "If-Unmodified-Since: Mon, 01 Jan 1990 00:00:00 GMT") == b"412"


# -- ranges -------------------------------------------------------------------------------
DATA = bytes(range(48, 58)) * 100


def byteranges(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """The parts of a ``multipart/byteranges`` body: (Content-Range, Content-Type, bytes),
    checking the framing on the way (no preamble, the closing delimiter last)."""
    prefix = "multipart/byteranges; boundary="
    assert content_type.startswith(prefix), content_type
    dash = b"--" + content_type.removeprefix(prefix).encode("latin-1")
    tail = b"\r\n" + dash + b"--\r\n"
    assert body.endswith(tail), body[-80:]
    chunks = (b"\r\n" + body.removesuffix(tail)).split(b"\r\n" + dash + b"\r\n")
    assert chunks[0] == b"", chunks[0][:80]
    parts = []
    for chunk in chunks[1:]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        assert sep, chunk[:80]
        lines = [line.partition(":") for line in head.decode("latin-1").split("\r\n")]
        headers = {k.strip().lower(): v.strip() for k, _, v in lines}
        parts.append((headers["content-range"], headers["content-type"], data))
    return parts


@pytest.mark.parametrize("target", ["/s/data.txt", "/s/big.bin"])
def test_ranges_with_httpx(client: httpx.Client, root: Path, target: str) -> None:
    data = (root / target.removeprefix("/s/")).read_bytes()
    size = len(data)
    r = client.get(target, headers={"range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == data[:10]
    assert r.headers["content-range"] == f"bytes 0-9/{size}"
    r = client.get(target, headers={"range": "bytes=-7"})
    assert r.status_code == 206 and r.content == data[-7:]
    r = client.get(target, headers={"range": f"bytes={size - 3}-"})
    assert r.status_code == 206 and r.content == data[-3:]
    assert r.headers["content-range"] == f"bytes {size - 3}-{size - 1}/{size}"
    r = client.get(target, headers={"range": "bytes=1-2, 20-29"})
    assert r.status_code == 206
    assert int(r.headers["content-length"]) == len(r.content)
    part_type = client.head(target).headers["content-type"]
    assert byteranges(r.headers["content-type"], r.content) == [
        (f"bytes 1-2/{size}", part_type, data[1:3]),
        (f"bytes 20-29/{size}", part_type, data[20:30]),
    ]
    r = client.get(target, headers={"range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    etag = client.head(target).headers["etag"]
    r = client.get(target, headers={"range": "bytes=5-5", "if-range": etag})
    assert r.status_code == 206 and r.content == data[5:6]
    r = client.get(target, headers={"range": "bytes=0-0", "if-range": '"stale"'})
    assert r.status_code == 200 and r.content == data
    r = client.head(target, headers={"range": "bytes=0-0"})
    assert r.status_code == 200 and r.headers["content-length"] == str(size)
    # too many ranges, or overlapping ones: the whole file once, with 200
    many = ",".join(f"{i * 2}-{i * 2}" for i in range(17))
    for spec in (many, "0-5,3-9"):
        r = client.get(target, headers={"range": f"bytes={spec}"})
        assert r.status_code == 200 and r.content == data and "content-range" not in r.headers


@needs_curl
def test_ranges_with_curl(server: BastionProcess) -> None:
    url = f"{server.url}/s/data.txt"
    assert curl("-r", "10-14", url).stdout == DATA[10:15]
    out = curl("-i", "-r", "0-1,5-6", url).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206 Partial Content\r\n")
    headers = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (line.partition(":") for line in head.decode().split("\r\n")[1:])
    )
    size = len(DATA)
    assert byteranges(headers["content-type"], body) == [
        (f"bytes 0-1/{size}", "text/plain; charset=utf-8", DATA[0:2]),
        (f"bytes 5-6/{size}", "text/plain; charset=utf-8", DATA[5:7]),
    ]
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-r", "5000-6000", url).stdout
    assert code == b"416"


# -- safety ---------------------------------------------------------------------------------
TRAVERSALS = [
    b"/s/../secret.txt",
    b"/s/%2e%2e/secret.txt",
    b"/s/%2E%2E/secret.txt",
    b"/s/.%2e/secret.txt",
    b"/s/%2e./secret.txt",
    b"/s/..%2fsecret.txt",
    b"/s/..%2Fsecret.txt",
    b"/s/%2e%2e%2fsecret.txt",
    b"/s/%252e%252e/secret.txt",
    b"/s/%252e%252e%252fsecret.txt",
    b"/s/..%255csecret.txt",
    b"/s/..%5csecret.txt",
    b"/s/..%5Csecret.txt",
    b"/s/..\\secret.txt",
    b"/s/%2e%2e%5csecret.txt",
    b"/s/....//secret.txt",
    b"/s//../secret.txt",
    b"/s/sub/../../secret.txt",
    b"/s/sub/%2e%2e/%2e%2e/secret.txt",
    b"/s/./../secret.txt",
    b"/s/%2e/%2e%2e/secret.txt",
    b"/s/sub/..././../secret.txt",
    b"/s/link.txt",
    b"/s/linkdir/secret.txt",
    b"/s/sub/..%00/secret.txt",
    b"/s/secret.txt%00.css",
    b"/s/%00../secret.txt",
    b"/s/.env",
    b"/s/%2eenv",
    b"/s/sub/../.env",
    b"/s/.git/config",
    b"/s/%2egit/config",
    b"/s//etc/passwd",
    b"/s/%2fetc%2fpasswd",
    b"/s/..%c0%af../secret.txt",
    b"/s/%c0%ae%c0%ae/secret.txt",
    b"/s/%u002e%u002e/secret.txt",
    b"/s/..;/secret.txt",
    b"/s/../root-evil/secret.txt",
    b"/s/%2e%2e/root-evil/secret.txt",
    b"/s/..%2froot-evil%2fsecret.txt",
    b"/s/" + b"../" * 12 + b"etc/passwd",
    b"/s/" + b"%2e%2e/" * 12 + b"etc/passwd",
    b"/s/" + b"..%2f" * 12 + b"etc%2fpasswd",
]


def dotted(target: bytes) -> bool:
    """Whether the path is refused before any route: a segment of the decoded path is
    "." or ".." (clients remove those), also with path parameters (";..."), or it holds
    a control character once decoded."""
    from urllib.parse import unquote_to_bytes

    text = unquote_to_bytes(target)
    if any(c < 0x20 or c == 0x7F for c in text):
        return True
    return any(p.partition(b";")[0] in (b".", b"..") for p in text.split(b"/"))


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode() for t in TRAVERSALS])
def test_traversal_never_escapes(server: BastionProcess, target: bytes) -> None:
    response = raw(server, target)
    assert response.startswith(b"HTTP/1.1 ")
    assert SECRET.encode() not in response
    assert b"root:x:0:0" not in response
    if dotted(target):
        # refused before any route: the path reads differently for the router and an app
        # (or for a Java upstream: "..;")
        assert response.startswith(b"HTTP/1.1 400 "), response[:200]
    else:
        # everything else refused is a plain 404, like a missing file (docs/static.md)
        assert response.startswith(b"HTTP/1.1 404 "), response[:200]


@needs_curl
def test_traversal_with_curl_path_as_is(server: BastionProcess) -> None:
    for target in ("/s/../secret.txt", "/s/%2e%2e/secret.txt", "/s/sub/../../secret.txt"):
        out = subprocess.run(
            [CURL, "-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", server.url + target],
            capture_output=True,
            timeout=10,
        ).stdout
        assert SECRET.encode() not in out
        assert out.rsplit(b"\n", 1)[1] == b"400", target  # dot-segments: refused


# -- freshness -------------------------------------------------------------------------------
def test_changed_file_is_served_fresh(client: httpx.Client, root: Path) -> None:
    path = root / "sub" / "changing.txt"
    path.write_text("version 1\n")
    assert client.get("/s/sub/changing.txt").text == "version 1\n"
    path.write_text("version 2, longer\n")
    deadline = time.monotonic() + 5  # the cache re-checks the file within a second
    while time.monotonic() < deadline:
        if client.get("/s/sub/changing.txt").text == "version 2, longer\n":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the changed file was never served")
    path.unlink()
    deadline = time.monotonic() + 5
    while client.get("/s/sub/changing.txt").status_code != 404:
        assert time.monotonic() < deadline, "a deleted file is still served"
        time.sleep(0.1)


# -- REDbot ------------------------------------------------------------------------------
def _redbot_notes(url: str) -> list[tuple[str, str, str]]:
    out = subprocess.run(
        [str(REDBOT), "-o", "har", url], capture_output=True, timeout=90, check=True
    ).stdout
    notes = []
    for entry in json.loads(out)["log"]["entries"]:
        for note in entry.get("_red_messages", []):
            notes.append((note.get("level", ""), note.get("note_id", ""), note.get("summary", "")))
    return notes


@pytest.mark.skipif(not REDBOT.exists(), reason="redbot is not installed (pip install redbot)")
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/l/style.css", {"INM_304", "IMS_304", "RANGE_CORRECT", "CONNEG_GZIP_GOOD"}),
        ("/l/big.bin", {"INM_304", "IMS_304", "RANGE_CORRECT"}),
        ("/site/app.js", {"INM_304", "IMS_304", "RANGE_CORRECT"}),
    ],
)
def test_redbot_finds_no_problem(server: BastionProcess, path: str, expected: set[str]) -> None:
    notes = _redbot_notes(server.url + path)
    problems = [n for n in notes if n[0] in ("BAD", "WARN")]
    assert not problems, problems
    good = {n[1] for n in notes if n[0] == "GOOD"}
    assert expected <= good, notes


# -- a browser ---------------------------------------------------------------------------
def test_site_loads_in_chromium(server: BastionProcess) -> None:
    failed: list[str] = []
    statuses: dict[str, int] = {}
    with chromium() as browser:
        page = browser.new_page()
        page.on("requestfailed", lambda req: failed.append(f"{req.url} {req.failure}"))
        page.on("response", lambda resp: statuses.__setitem__(resp.url, resp.status))
        page.goto(server.url + "/site/", wait_until="load")
        assert page.text_content("#status") == "js ok"
        assert page.evaluate("document.getElementById('logo').naturalWidth") == 16
        color = page.evaluate("getComputedStyle(document.body).color")
        assert color == "rgb(1, 2, 3)"
        page.reload(wait_until="load")  # revalidation: 304s must work in a browser too
        assert page.text_content("#status") == "js ok"
    assert not failed, failed
    assert set(statuses.values()) <= {200, 304}, statuses
    names = {url.rsplit("/", 1)[-1] for url in statuses}
    assert {"", "style.css", "app.js", "logo.png"} <= names, statuses


# -- the Django example of docs/static.md ---------------------------------------------------
DJANGO_SETTINGS = """
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEBUG = False
SECRET_KEY = "static-test-only"
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = ["django.contrib.staticfiles", "blog"]
DATABASES = {}
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
    },
}
"""

DJANGO_URLS = """
from django.http import HttpResponse
from django.templatetags.static import static
from django.urls import path


def home(request):
    return HttpResponse(f'<link rel="stylesheet" href="{static("blog/site.css")}">home')


urlpatterns = [path("", home)]
"""


def test_django_site_with_static_served_by_bastion(tmp_path: Path) -> None:
    pytest.importorskip("django")
    (tmp_path / "mysite").mkdir()
    (tmp_path / "mysite" / "__init__.py").write_text("")
    (tmp_path / "mysite" / "settings.py").write_text(DJANGO_SETTINGS)
    (tmp_path / "mysite" / "urls.py").write_text(DJANGO_URLS)
    (tmp_path / "mysite" / "wsgi.py").write_text(
        "import os\nfrom django.core.wsgi import get_wsgi_application\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n"
        "application = get_wsgi_application()\n"
    )
    (tmp_path / "blog" / "static" / "blog").mkdir(parents=True)
    (tmp_path / "blog" / "__init__.py").write_text("")
    (tmp_path / "blog" / "static" / "blog" / "site.css").write_text(CSS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    subprocess.run(
        [sys.executable, "-m", "django", "collectstatic", "--noinput", "-v", "0"],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=60,
    )
    (tmp_path / "bastion.toml").write_text(
        """
[app]
target = "mysite.wsgi:application"

[server]
bind = ["127.0.0.1:0"]

[workers]
count = 1

[[routes]]
path = "/static/"
static = { root = "staticfiles", cache_control = "public, max-age=31536000, immutable" }

[[routes]]
path = "/"
app = "default"
"""
    )
    with (
        serve("-c", "bastion.toml", cwd=tmp_path) as proc,
        httpx.Client(base_url=proc.url, timeout=10) as client,
    ):
        page = client.get("/")
        assert page.status_code == 200 and page.text.endswith("home")
        href = page.text.split('href="', 1)[1].split('"', 1)[0]
        assert href.startswith("/static/blog/site.") and href != "/static/blog/site.css"
        css = client.get(href)
        assert css.status_code == 200 and css.text == CSS
        assert css.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert css.headers["content-type"] == "text/css; charset=utf-8"
        assert client.get("/static/blog/nope.css").status_code == 404


def test_command_line_static_without_a_config_file(root: Path) -> None:
    with (
        serve("--static", f"/pub={root}", "--workers", "1") as proc,
        httpx.Client(base_url=proc.url, timeout=10) as client,
    ):
        r = client.get("/pub/style.css", headers={"accept-encoding": "identity"})
        assert r.status_code == 200 and r.text == CSS
        assert client.get("/pub/.env").status_code == 404
        assert client.get("/pub/docs/").text == "<h1>docs</h1>\n"
