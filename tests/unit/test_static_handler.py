"""The static handler behind the real HTTP/1.1 protocol on a fake transport."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

import bastion.edge.static as static_mod
from bastion.config.schema import StaticConfig
from bastion.edge.static import StaticHandler
from bastion.edge.types import RouteMatch
from tests.unit.fake_exchange import run_async
from tests.unit.h1_harness import byteranges, make_conn, parse_responses

Response = tuple[int, dict[str, str], bytes]


def fetch(handler: StaticHandler, target: str, method: str = "GET", **headers: str) -> Response:
    """One request through HTTP1Protocol; waits (bounded) for the whole response."""
    lines = [f"{method} {target} HTTP/1.1", "Host: test"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def route(ex: Any) -> None:
        handler(ex, RouteMatch(0, {}, ex.head.path))

    async def run() -> Response:
        proto, transport, _ = make_conn(route)
        proto.data_received(raw)
        for _ in range(500):
            data = bytes(transport.data)
            if b"\r\n\r\n" in data:
                head = data.split(b"\r\n\r\n", 1)[0].lower()
                want = 0
                if b"content-length:" in head and method != "HEAD":
                    want = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if len(data) - len(head) - 4 >= want:
                    break
            await asyncio.sleep(0.002)
        responses = (
            parse_responses(transport.take()) if method != "HEAD" else _head_only(transport.take())
        )
        assert len(responses) == 1, responses
        return responses[0]

    return run_async(run())


def _head_only(data: bytes) -> list[Response]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    return [(int(head[0].split()[1]), headers, data.split(b"\r\n\r\n", 1)[1])]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "css").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "css" / "site.css").write_text("body { color: red }\n" * 10)
    (root / "app.js").write_text("console.log('hi');\n" * 50)
    (root / "app.js.gz").write_bytes(gzip.compress((root / "app.js").read_bytes()))
    (root / "app.js.br").write_bytes(b"pretend-brotli")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / ".env").write_text("SECRET=1\n")
    (root / "404.html").write_text("<p>custom missing page</p>\n")
    (root / "empty.txt").write_bytes(b"")
    (tmp_path / "outside.txt").write_text("outside secret\n")
    return root


def handler_for(root: Path, **kw: Any) -> StaticHandler:
    return StaticHandler(StaticConfig(root=str(root), **kw))


def test_file_from_memory(site: Path) -> None:
    h = handler_for(site)
    status, headers, body = fetch(h, "/css/site.css")
    assert status == 200
    assert body == (site / "css" / "site.css").read_bytes()
    assert headers["content-type"] == "text/css; charset=utf-8"
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"].startswith('"')
    assert headers["last-modified"].endswith("GMT")
    assert "vary" not in headers
    assert h._cache.total == len(body)


def test_second_request_is_a_cache_hit_with_the_same_answer(site: Path) -> None:
    h = handler_for(site)
    first = fetch(h, "/app.js")
    os.unlink(site / "app.js")  # within the trust window the cached copy answers
    assert fetch(h, "/app.js")[2] == first[2]


def test_changed_file_is_reloaded_after_the_trust_window(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = handler_for(site)
    assert fetch(h, "/index.html")[2] == b"<h1>home</h1>\n"
    (site / "index.html").write_text("<h1>changed, longer</h1>\n")
    monkeypatch.setattr(static_mod, "TRUST_SECONDS", 0.0)
    status, headers, body = fetch(h, "/index.html")
    assert body == b"<h1>changed, longer</h1>\n"
    os.unlink(site / "index.html")
    assert fetch(h, "/index.html")[0] == 404


def test_large_file_goes_out_with_sendfile(site: Path) -> None:
    h = handler_for(site)
    status, headers, body = fetch(h, "/big.bin")
    assert status == 200 and body == (site / "big.bin").read_bytes()
    assert headers["content-length"] == "300000"
    assert h._cache.total == 0  # nothing of it held in memory


def test_head(site: Path) -> None:
    h = handler_for(site)
    for target in ("/css/site.css", "/big.bin"):
        status, headers, body = fetch(h, target, "HEAD")
        assert status == 200 and body == b""
        assert headers["content-length"] == str((site / target[1:]).stat().st_size)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_405(site: Path, method: str) -> None:
    status, headers, _ = fetch(handler_for(site), "/index.html", method)
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_index_and_directory_redirect(site: Path) -> None:
    h = handler_for(site)
    assert fetch(h, "/")[2] == b"<h1>home</h1>\n"
    status, headers, _ = fetch(h, "/css?x=1")
    assert status == 301 and headers["location"] == "/css/?x=1"
    assert fetch(h, "/css/")[0] == 404  # no index, no listing
    assert fetch(h, "/index.html/")[0] == 404


def test_listing(site: Path) -> None:
    (site / "css" / "<b>&x.css").write_text("x")
    (site / "css" / ".hidden").write_text("x")
    status, headers, body = fetch(handler_for(site, listing=True), "/css/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b"site.css" in body and b"&lt;b&gt;&amp;x.css" in body and b"<b>" not in body
    assert b"%3Cb%3E%26x.css" in body
    assert b".hidden" not in body


def test_not_found_page(site: Path) -> None:
    status, headers, body = fetch(handler_for(site, not_found="404.html"), "/nope")
    assert status == 404 and body == b"<p>custom missing page</p>\n"
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert fetch(handler_for(site), "/nope")[0] == 404


def test_dotfiles(site: Path) -> None:
    assert fetch(handler_for(site), "/.env")[0] == 404
    assert fetch(handler_for(site, dotfiles=True), "/.env")[2] == b"SECRET=1\n"


def test_mime_overrides_and_defaults(site: Path) -> None:
    (site / "x.wasm").write_bytes(b"\0asm")
    (site / "x.unknownext").write_bytes(b"?")
    h = handler_for(site, mime_types={".js": "application/x-mine", "unknownext": "text/x-u"})
    assert fetch(h, "/app.js")[1]["content-type"] == "application/x-mine"
    assert fetch(h, "/x.unknownext")[1]["content-type"] == "text/x-u"
    assert fetch(h, "/x.wasm")[1]["content-type"] == "application/wasm"
    assert (
        fetch(handler_for(site), "/app.js")[1]["content-type"] == "text/javascript; charset=utf-8"
    )


def test_cache_control(site: Path) -> None:
    h = handler_for(site, cache_control="public, max-age=31536000, immutable")
    assert fetch(h, "/app.js")[1]["cache-control"] == "public, max-age=31536000, immutable"


def test_precompressed_choice(site: Path) -> None:
    h = handler_for(site)
    plain = fetch(h, "/app.js")
    assert plain[1]["vary"] == "accept-encoding" and "content-encoding" not in plain[1]
    gz = fetch(h, "/app.js", accept_encoding="gzip")
    assert gz[1]["content-encoding"] == "gzip" and gzip.decompress(gz[2]) == plain[2]
    assert gz[1]["content-type"] == plain[1]["content-type"]
    assert gz[1]["etag"] != plain[1]["etag"]
    br = fetch(h, "/app.js", accept_encoding="gzip, deflate, br")
    assert br[1]["content-encoding"] == "br" and br[2] == b"pretend-brotli"
    assert (
        fetch(h, "/app.js", accept_encoding="gzip;q=0.5, br;q=0.4")[1]["content-encoding"] == "gzip"
    )
    assert "content-encoding" not in fetch(h, "/app.js", accept_encoding="br;q=0, gzip;q=0")[1]
    assert "content-encoding" not in fetch(h, "/app.js", accept_encoding="identity")[1]
    assert (
        "content-encoding"
        not in fetch(handler_for(site, precompressed=False), "/app.js", accept_encoding="br")[1]
    )


def test_precompressed_zstd(site: Path) -> None:
    original = (site / "app.js").read_bytes()
    zst = zstandard.ZstdCompressor(level=19).compress(original)
    (site / "app.js.zst").write_bytes(zst)
    h = handler_for(site)
    plain = fetch(h, "/app.js")
    status, headers, body = fetch(h, "/app.js", accept_encoding="zstd")
    assert status == 200
    assert headers["content-encoding"] == "zstd"
    assert body == zst  # the file on disk, as it is
    assert zstandard.ZstdDecompressor().decompress(body) == original
    assert headers["content-length"] == str(len(zst))
    assert headers["content-type"] == plain[1]["content-type"]
    assert headers["vary"] == "accept-encoding"
    assert headers["etag"] not in (
        plain[1]["etag"],
        fetch(h, "/app.js", accept_encoding="gzip")[1]["etag"],
    )
    # the client's weights choose among .br, .zst and .gz
    chosen = fetch(h, "/app.js", accept_encoding="gzip;q=0.5, br;q=0.5, zstd")[1]
    assert chosen["content-encoding"] == "zstd"
    chosen = fetch(h, "/app.js", accept_encoding="gzip, zstd;q=0.1")[1]
    assert chosen["content-encoding"] == "gzip"
    assert fetch(h, "/app.js", accept_encoding="gzip, br")[1]["content-encoding"] == "br"
    assert "content-encoding" not in fetch(h, "/app.js", accept_encoding="zstd;q=0")[1]
    off = fetch(handler_for(site, precompressed=False), "/app.js", accept_encoding="zstd")
    assert "content-encoding" not in off[1] and off[2] == original


def test_stale_sibling_is_not_served(site: Path) -> None:
    old = time.time() - 100
    os.utime(site / "app.js.br", (old, old))
    h = handler_for(site)
    assert fetch(h, "/app.js", accept_encoding="br")[1].get("content-encoding") is None


def test_304_and_412(site: Path) -> None:
    h = handler_for(site, cache_control="no-cache")
    _, headers, _ = fetch(h, "/app.js")
    etag, lm = headers["etag"], headers["last-modified"]
    status, h304, body = fetch(h, "/app.js", if_none_match=etag)
    assert status == 304 and body == b""
    assert h304["etag"] == etag and h304["cache-control"] == "no-cache"
    assert h304["vary"] == "accept-encoding"
    assert "content-length" not in h304
    assert fetch(h, "/app.js", if_modified_since=lm)[0] == 304
    assert fetch(h, "/app.js", if_match='"nope"')[0] == 412
    assert fetch(h, "/app.js", if_match=etag)[0] == 200
    assert fetch(h, "/app.js", if_unmodified_since="Sun, 06 Nov 1994 08:49:37 GMT")[0] == 412
    # the gzip variant has its own tag
    gz = fetch(h, "/app.js", accept_encoding="gzip")[1]["etag"]
    assert fetch(h, "/app.js", accept_encoding="gzip", if_none_match=gz)[0] == 304
    assert fetch(h, "/app.js", if_none_match=gz)[0] == 200


@pytest.mark.parametrize("target", ["/data.bin", "/big.bin"])
def test_ranges(site: Path, target: str) -> None:
    h = handler_for(site)
    data = (site / target[1:]).read_bytes()
    size = len(data)
    status, headers, body = fetch(h, target, range="bytes=10-19")
    assert status == 206 and body == data[10:20]
    assert headers["content-range"] == f"bytes 10-19/{size}"
    status, headers, body = fetch(h, target, range="bytes=-5")
    assert status == 206 and body == data[-5:]
    status, headers, body = fetch(h, target, range="bytes=0-1,100-103")
    assert status == 206
    part_type = fetch(h, target, "HEAD")[1]["content-type"]
    assert byteranges(headers["content-type"], body) == [
        (f"bytes 0-1/{size}", part_type, data[0:2]),
        (f"bytes 100-103/{size}", part_type, data[100:104]),
    ]
    status, headers, body = fetch(h, target, range=f"bytes={size}-")
    assert status == 416 and headers["content-range"] == f"bytes */{size}"
    # If-Range: a matching tag gives the range, another tag the whole file
    etag = headers.get("etag") or fetch(h, target)[1]["etag"]
    assert fetch(h, target, range="bytes=7-7", if_range=etag)[::2] == (206, data[7:8])
    assert fetch(h, target, range="bytes=0-0", if_range='"old"')[::2] == (200, data)
    # ignored for HEAD and for nonsense
    status, headers, body = fetch(h, target, "HEAD", range="bytes=0-0")
    assert (status, headers["content-length"], body) == (200, str(size), b"")
    assert fetch(h, target, range="bytes=5-1")[::2] == (200, data)


def test_range_is_served_from_the_file_itself(site: Path) -> None:
    h = handler_for(site)
    status, headers, body = fetch(h, "/app.js", range="bytes=0-6", accept_encoding="br")
    assert status == 206 and body == b"console" and "content-encoding" not in headers
    assert headers["vary"] == "accept-encoding"


def test_memory_budget_evicts(site: Path) -> None:
    for i in range(5):
        (site / f"f{i}.txt").write_bytes(b"x" * 1000)
    h = handler_for(site, memory_max_total=2500)
    for i in range(5):
        assert fetch(h, f"/f{i}.txt")[2] == b"x" * 1000
    assert h._cache.total <= 2500
    assert len(h._cache.entries) == 2


def test_zero_budget_still_serves(site: Path) -> None:
    h = handler_for(site, memory_max_total=0, memory_max_file=0)
    assert fetch(h, "/index.html")[2] == b"<h1>home</h1>\n"
    assert fetch(h, "/index.html")[2] == b"<h1>home</h1>\n"
    assert h._cache.total == 0


def test_empty_file(site: Path) -> None:
    status, headers, body = fetch(handler_for(site), "/empty.txt")
    assert status == 200 and body == b"" and headers["content-length"] == "0"
    assert fetch(handler_for(site), "/empty.txt", range="bytes=0-")[0] == 416


def test_bad_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        StaticHandler(StaticConfig(root=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="plain file name"):
        StaticHandler(StaticConfig(root=str(tmp_path), index=("../x",)))
    with pytest.raises(ValueError, match="invalid content type"):
        StaticHandler(StaticConfig(root=str(tmp_path), mime_types={".x": "a\r\nb"}))


def test_large_file_replaced_within_the_trust_window_is_served_new(site: Path) -> None:
    h = handler_for(site)
    assert fetch(h, "/big.bin")[0] == 200
    fresh = os.urandom(280_000)
    tmp = site / "big.bin.tmp"
    tmp.write_bytes(fresh)
    os.replace(tmp, site / "big.bin")  # a new inode, as deployments do
    status, headers, body = fetch(h, "/big.bin")
    assert status == 200 and body == fresh and headers["content-length"] == "280000"
    os.unlink(site / "big.bin")
    assert fetch(h, "/big.bin")[0] == 404


def test_head_of_not_found_page_has_no_body(site: Path) -> None:
    status, headers, body = fetch(handler_for(site, not_found="404.html"), "/nope", "HEAD")
    assert status == 404 and body == b""
    assert headers["content-length"] == str((site / "404.html").stat().st_size)
