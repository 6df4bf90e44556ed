"""Compression and response headers through the real server, with httpx and curl.

One bastion serves an ASGI app (``apps/compress_app.py``), a WSGI app below ``/wsgi/``
(``apps/compress_wsgi.py``) and a static directory, with
``[compress]`` on and a ``strict`` header preset plus add/remove rules for the whole site.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx
import pytest
import zstandard
from server import APPS, BastionProcess

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")

ROWS = b"".join(b"%d,user%d,user%d@example.com,%d\n" % (i, i, i, i * 7 % 100) for i in range(2000))
CSS = ("body { color: #333; margin: 0 auto; }\n" * 200).encode()

CONFIG = """
[app]
target = "compress_app:app"

[workers]
count = 1

[compress]
enabled = true

[headers]
preset = "strict"
hsts_max_age = 600
content_security_policy = "default-src 'self'"
add = {{ "X-Edge" = "bastion" }}
remove = ["X-Powered-By"]

[[routes]]
path = "/static/"
static = {{ root = "{root}" }}

[apps.wsgi]
target = "compress_wsgi:app"

[[routes]]
path = "/wsgi/"
app = "wsgi"

[[routes]]
path = "/plain/"
app = "default"
compress = {{ enabled = false }}
headers = {{ preset = "none" }}

[[routes]]
path = "/"
app = "default"
"""


def decode(coding: str | None, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return bytes(brotli.decompress(data))
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert coding is None, coding
    return data


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    tmp = tmp_path_factory.mktemp("site")
    public = tmp / "public"
    public.mkdir()
    (public / "site.css").write_bytes(CSS)
    (public / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    (public / "pre.js").write_bytes(b"console.log('identity');\n" * 100)
    (public / "pre.js.gz").write_bytes(gzip.compress(b"console.log('identity');\n" * 100))
    config = tmp / "bastion.toml"
    config.write_text(CONFIG.format(root=public))
    rows = tmp / "rows.csv"
    rows.write_bytes(ROWS)
    with BastionProcess(
        ["serve", "-c", str(config), "--bind", "127.0.0.1:0"],
        cwd=APPS,
        env={"COMPRESS_WSGI_FILE": str(rows)},
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def doc(site: BastionProcess) -> bytes:
    r = httpx.get(site.url + "/json", headers={"accept-encoding": "identity"})
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert len(r.content) > 8000
    return r.content


def get_raw_body(url: str, accept: str) -> tuple[httpx.Headers, bytes]:
    with (
        httpx.Client() as client,
        client.stream("GET", url, headers={"accept-encoding": accept}) as r,
    ):
        return r.headers, b"".join(r.iter_raw())


# -- compression -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, br;q=0.9", "gzip"),
        ("br;q=0.5, gzip;q=0.4, zstd;q=0", "br"),
    ],
)
@pytest.mark.parametrize("path", ["/json", "/chunks"])
def test_app_response_compressed(
    site: BastionProcess, doc: bytes, path: str, accept: str, coding: str
) -> None:
    headers, body = get_raw_body(site.url + path, accept)
    assert headers["content-encoding"] == coding
    assert headers["vary"] == "Accept-Encoding"
    assert len(body) < len(doc) / 3
    assert decode(coding, body) == doc
    if path == "/json":  # the whole body at once: compressed with a length
        assert headers["content-length"] == str(len(body))
        assert headers["etag"] == 'W/"doc-v1"'
    else:  # streamed: chunked
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers


def test_httpx_decodes_every_algorithm(site: BastionProcess, doc: bytes) -> None:
    for coding in ("gzip", "br", "zstd"):
        r = httpx.get(site.url + "/json", headers={"accept-encoding": coding})
        assert r.headers["content-encoding"] == coding
        assert r.content == doc


@pytest.mark.parametrize(
    ("path", "accept", "vary"),
    [
        ("/json", "identity", True),  # the client wants none
        ("/json", "deflate", True),  # nothing we speak
        ("/small", "gzip", True),  # below min_size
        ("/png", "gzip", False),  # not a compressible type
        ("/no-transform", "gzip", False),  # the app forbids it
        ("/plain/json", "gzip", False),  # compression off for this route
    ],
)
def test_not_compressed(site: BastionProcess, path: str, accept: str, vary: bool) -> None:
    headers, body = get_raw_body(site.url + path, accept)
    assert "content-encoding" not in headers
    assert ("vary" in headers) is vary
    assert headers["content-length"] == str(len(body))


def test_already_encoded_left_alone(site: BastionProcess, doc: bytes) -> None:
    headers, body = get_raw_body(site.url + "/encoded", "br, zstd, gzip")
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == doc


FRAMING = {"date", "content-length", "transfer-encoding"}


@pytest.mark.parametrize("accept", ["br", "gzip", "identity"])
@pytest.mark.parametrize("path", ["/json", "/static/site.css", "/wsgi/rows", "/chunks"])
def test_head_gets_the_head_of_get(site: BastionProcess, path: str, accept: str) -> None:
    """RFC 9110 9.3.2: HEAD gets GET's header fields, compressed or not. The length is
    GET's when the handler gave HEAD its body (the ASGI app here does), and left out when
    the compressed length is unknown (a static file's HEAD)."""
    with httpx.Client(base_url=site.url) as c:
        with c.stream("GET", path, headers={"accept-encoding": accept}) as got:
            body = b"".join(got.iter_raw())
        head = c.head(path, headers={"accept-encoding": accept})
    assert got.status_code == head.status_code == 200
    assert head.content == b""

    def fields(r: httpx.Response) -> list[tuple[str, str]]:
        return sorted((k, v) for k, v in r.headers.multi_items() if k not in FRAMING)

    assert fields(head) == fields(got)
    if accept != "identity":
        assert head.headers.get("content-encoding") == accept
    if "content-length" in head.headers:
        assert int(head.headers["content-length"]) == len(body)
    if path == "/json":
        assert "content-length" in head.headers


@needs_curl
def test_curl_compressed(site: BastionProcess, doc: bytes, tmp_path: Path) -> None:
    assert CURL is not None
    out = subprocess.run(
        [CURL, "-sS", "--compressed", "-D", str(tmp_path / "h"), site.url + "/json"],
        capture_output=True,
        timeout=10,
        check=True,
    )
    assert out.stdout == doc
    head = (tmp_path / "h").read_bytes().decode("latin-1").lower()
    assert "content-encoding: " in head  # curl asked for what it supports and decoded it
    assert "vary: accept-encoding" in head


@needs_curl
@pytest.mark.parametrize("coding", ["br", "zstd", "gzip"])
def test_curl_explicit_encoding(
    site: BastionProcess, doc: bytes, tmp_path: Path, coding: str
) -> None:
    assert CURL is not None
    out = subprocess.run(
        [
            CURL,
            "-sS",
            "-H",
            f"Accept-Encoding: {coding}",
            "-D",
            str(tmp_path / "h"),
            site.url + "/json",
        ],
        capture_output=True,
        timeout=10,
        check=True,
    )
    head = (tmp_path / "h").read_bytes().decode("latin-1").lower()
    assert f"content-encoding: {coding}\r\n" in head
    assert decode(coding, out.stdout) == doc


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_server_sent_events_stay_incremental(site: BastionProcess, coding: str) -> None:
    """Each event can be decoded on arrival; the next one is only made when asked for."""
    if coding == "gzip":
        d: object = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif coding == "br":
        d = brotli.Decompressor()
    else:
        d = zstandard.ZstdDecompressor().decompressobj()

    def feed(data: bytes) -> bytes:
        return bytes(d.process(data) if coding == "br" else d.decompress(data))  # type: ignore[attr-defined]

    timeout = httpx.Timeout(10.0)
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("GET", site.url + "/events", headers={"accept-encoding": coding}) as r,
    ):
        assert r.headers["content-encoding"] == coding
        assert r.headers["content-type"] == "text/event-stream"
        raw = r.iter_raw()
        for i in range(3):
            if i:
                assert client.get(site.url + "/next").text == "ok"
            expected = b"id: %d\ndata: event number %d\n\n" % (i, i)
            got = b""
            while len(got) < len(expected):
                got += feed(next(raw))  # blocks (and times out) if the event is held back
            assert got == expected
        rest = b"".join(feed(chunk) for chunk in raw)
        assert rest == b""


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_wsgi_streamed_rows(site: BastionProcess, coding: str) -> None:
    headers, body = get_raw_body(site.url + "/wsgi/rows", coding)
    assert headers["content-encoding"] == coding
    assert headers["transfer-encoding"] == "chunked"
    expected = b"id,name,email,score\n" + ROWS
    assert decode(coding, body) == expected


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "identity"])
def test_wsgi_file_wrapper(site: BastionProcess, coding: str) -> None:
    """A file the app hands over for sendfile is read and compressed in blocks."""
    expected = ROWS
    headers, body = get_raw_body(site.url + "/wsgi/file", coding)
    if coding == "identity":
        assert "content-encoding" not in headers
        assert headers["content-length"] == str(len(expected))
        assert body == expected
    else:
        assert headers["content-encoding"] == coding
        assert "content-length" not in headers
        assert len(body) < len(expected) / 2
        assert decode(coding, body) == expected


# -- compression of static files -------------------------------------------------------
def test_static_file_compressed_on_the_fly(site: BastionProcess) -> None:
    headers, body = get_raw_body(site.url + "/static/site.css", "br")
    assert headers["content-encoding"] == "br"
    assert "accept-encoding" in headers["vary"].lower()
    assert decode("br", body) == CSS
    headers, body = get_raw_body(site.url + "/static/site.css", "identity")
    assert "content-encoding" not in headers
    assert body == CSS


def test_static_image_not_compressed(site: BastionProcess) -> None:
    headers, body = get_raw_body(site.url + "/static/logo.png", "gzip, br")
    assert "content-encoding" not in headers
    assert body.startswith(b"\x89PNG")


def test_static_precompressed_not_compressed_again(site: BastionProcess) -> None:
    headers, body = get_raw_body(site.url + "/static/pre.js", "gzip")
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == b"console.log('identity');\n" * 100


def test_static_range_not_compressed(site: BastionProcess) -> None:
    r = httpx.get(
        site.url + "/static/site.css", headers={"accept-encoding": "gzip", "range": "bytes=0-99"}
    )
    assert r.status_code == 206
    assert "content-encoding" not in r.headers
    assert r.content == CSS[:100]


# -- response headers ------------------------------------------------------------------
STRICT = {
    "strict-transport-security": "max-age=600; includeSubDomains",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "content-security-policy": "default-src 'self'",
    "x-edge": "bastion",
}


@pytest.mark.parametrize("path", ["/json", "/static/site.css", "/nothing-here", "/static/nope"])
def test_security_headers_on_app_and_static(site: BastionProcess, path: str) -> None:
    r = httpx.get(site.url + path)
    for name, value in STRICT.items():
        assert r.headers.get(name) == value, (path, name, r.headers)
    assert "camera=()" in r.headers["permissions-policy"]


def test_remove_and_the_apps_own_value(site: BastionProcess) -> None:
    r = httpx.get(site.url + "/powered")
    assert "x-powered-by" not in r.headers
    assert r.headers["x-frame-options"] == "SAMEORIGIN"  # the app's own beats the preset
    assert r.headers["x-edge"] == "bastion"


def test_route_without_headers(site: BastionProcess) -> None:
    r = httpx.get(site.url + "/plain/powered")
    assert r.headers["x-powered-by"] == "SomeFramework/1.0"
    assert "x-content-type-options" not in r.headers
    assert "x-edge" not in r.headers


@needs_curl
def test_curl_sees_security_headers(site: BastionProcess) -> None:
    assert CURL is not None
    out = subprocess.run(
        [CURL, "-sS", "-o", "/dev/null", "-D", "-", site.url + "/static/site.css"],
        capture_output=True,
        timeout=10,
        check=True,
    )
    head = out.stdout.decode("latin-1").lower()
    for name, value in STRICT.items():
        assert f"{name}: {value.lower()}\r\n" in head


def test_weak_etag_of_compressed_static_file_revalidates(site: BastionProcess) -> None:
    url = site.url + "/static/site.css"
    first = httpx.get(url, headers={"accept-encoding": "gzip"})
    assert first.headers["content-encoding"] == "gzip"
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    again = httpx.get(url, headers={"accept-encoding": "gzip", "if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert "content-encoding" not in again.headers
    assert "accept-encoding" in again.headers["vary"].lower()


def test_bad_header_value_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(
        '[app]\ntarget = "compress_app:app"\n'
        '[headers]\nadd = { "X-Ok" = "yes", "X-Bad" = "a\\r\\nSet-Cookie: x=1" }\n'
    )
    proc = BastionProcess(
        ["serve", "-c", str(config), "--bind", "127.0.0.1:0"], cwd=APPS, wait_ready=False
    ).start()
    try:
        assert proc.wait(30) == 2
    finally:
        proc.stop()
    assert "headers.add.X-Bad" in proc.log


def test_without_routes_the_app_is_filtered_too(tmp_path: Path, doc: bytes) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(
        '[app]\ntarget = "compress_app:app"\n'
        "[compress]\nenabled = true\n"
        '[headers]\npreset = "basic"\nremove = ["X-Powered-By"]\n'
    )
    with BastionProcess(["serve", "-c", str(config), "--bind", "127.0.0.1:0"], cwd=APPS) as p:
        headers, body = get_raw_body(p.url + "/json", "br")
        assert headers["content-encoding"] == "br"
        assert decode("br", body) == doc
        assert headers["x-content-type-options"] == "nosniff"
        r = httpx.get(p.url + "/powered")
        assert "x-powered-by" not in r.headers
