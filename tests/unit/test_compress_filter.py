"""The compression filter around an in-memory exchange: each rule, streaming, headers."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib

import brotli
import pytest
import zstandard

from bastion.config.schema import CompressConfig
from bastion.edge.compress import CompressingExchange, compress_filter
from bastion.protocol.types import Exchange, InvalidResponse
from tests.unit.fake_exchange import FakeExchange, run_async

ON = CompressConfig(enabled=True)
BODY = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(200)]).encode()
JSON = (b"content-type", b"application/json")


def decode(coding: str | None, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "br":
        return bytes(brotli.decompress(data))
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert coding is None
    return data


def wrapped(
    accept: str | None = "gzip, deflate, br, zstd",
    cfg: CompressConfig = ON,
    method: str = "GET",
) -> tuple[FakeExchange, Exchange]:
    headers = [("accept-encoding", accept)] if accept is not None else []
    ex = FakeExchange(method=method, headers=headers)
    filt = compress_filter(cfg)
    assert filt is not None
    return ex, filt(ex)


def test_disabled_is_none() -> None:
    assert compress_filter(CompressConfig()) is None
    assert compress_filter(CompressConfig(enabled=True, algorithms=())) is None


@pytest.mark.parametrize(
    ("accept", "coding"),
    [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("gzip, br, zstd", "zstd"), ("*", "zstd")],
)
def test_whole_body_compressed_with_length(accept: str, coding: str) -> None:
    ex, w = wrapped(accept)
    w.start_response(200, [JSON, (b"content-length", b"%d" % len(BODY))])
    assert w.response_started and not ex.response_started  # the head waits for the body
    w.finish(BODY)
    assert ex.finished
    assert ex.header("content-encoding") == coding
    assert ex.header("vary") == "Accept-Encoding"
    assert ex.header("content-length") == str(len(ex.body))
    assert len(ex.body) < len(BODY) / 3
    assert decode(coding, bytes(ex.body)) == BODY


def test_algorithm_order_from_config_breaks_ties() -> None:
    cfg = CompressConfig(enabled=True, algorithms=("gzip", "br"))
    ex, w = wrapped("zstd, br, gzip", cfg)
    w.start_response(200, [JSON])
    w.finish(BODY)
    assert ex.header("content-encoding") == "gzip"
    ex, w = wrapped("zstd", cfg)
    w.start_response(200, [JSON])
    w.finish(BODY)
    assert ex.header("content-encoding") is None
    assert ex.header("vary") == "Accept-Encoding"


def test_levels_come_from_config() -> None:
    sizes = {}
    for level in (1, 9):
        ex, w = wrapped("gzip", CompressConfig(enabled=True, gzip_level=level))
        w.start_response(200, [JSON])
        w.finish(BODY * 4)
        sizes[level] = len(ex.body)
        assert gzip.decompress(bytes(ex.body)) == BODY * 4
    assert sizes[9] < sizes[1]


@pytest.mark.parametrize(
    "ctype",
    [
        b"text/html; charset=utf-8",
        b"TEXT/CSS",
        b"text/plain",
        b"application/json",
        b"application/javascript; charset=utf-8",
        b"image/svg+xml",
    ],
)
def test_compressible_types(ctype: bytes) -> None:
    ex, w = wrapped("gzip")
    w.start_response(200, [(b"Content-Type", ctype)])
    w.finish(BODY)
    assert ex.header("content-encoding") == "gzip"


@pytest.mark.parametrize(
    "ctype", [b"image/png", b"application/octet-stream", b"video/mp4", b"application/zip"]
)
def test_other_types_untouched_without_vary(ctype: bytes) -> None:
    ex, w = wrapped("gzip")
    w.start_response(200, [(b"content-type", ctype)])
    w.finish(BODY)
    assert ex.header("content-encoding") is None
    assert ex.header("vary") is None
    assert bytes(ex.body) == BODY


def test_no_content_type_untouched() -> None:
    ex, w = wrapped("gzip")
    w.start_response(200, [])
    w.finish(BODY)
    assert ex.header("content-encoding") is None
    assert bytes(ex.body) == BODY


def test_not_modified_without_type_varies() -> None:
    ex, w = wrapped("gzip")
    w.start_response(304, [(b"etag", b'W/"x"')])
    w.finish()
    assert ex.status == 304
    assert ex.header("vary") == "Accept-Encoding"
    assert ex.header("content-encoding") is None
    ex, w = wrapped("gzip")
    w.start_response(304, [(b"etag", b'W/"x"'), (b"content-type", b"image/png")])
    w.finish()
    assert ex.header("vary") is None


def test_custom_types_and_wildcards() -> None:
    cfg = CompressConfig(enabled=True, types=("application/*", "image/svg+xml"))
    for ctype, expected in [
        (b"application/octet-stream", "gzip"),
        (b"text/html", None),
        (b"image/svg+xml", "gzip"),
    ]:
        ex, w = wrapped("gzip", cfg)
        w.start_response(200, [(b"content-type", ctype)])
        w.finish(BODY)
        assert ex.header("content-encoding") == expected, ctype
    ex, w = wrapped("gzip", CompressConfig(enabled=True, types=("*/*",)))
    w.start_response(200, [(b"content-type", b"image/png")])
    w.finish(BODY)
    assert ex.header("content-encoding") == "gzip"


@pytest.mark.parametrize(
    ("status", "extra", "method", "vary"),
    [
        (200, [(b"content-encoding", b"gzip")], "GET", False),  # already encoded
        (200, [(b"Content-Encoding", b"br")], "GET", False),
        (200, [(b"cache-control", b"public, No-Transform")], "GET", False),
        (206, [(b"content-range", b"bytes 0-99/5000")], "GET", True),
        (200, [(b"content-range", b"bytes 0-99/5000")], "GET", True),
        (304, [], "GET", True),
        (204, [], "GET", True),
    ],
)
def test_skip_rules(status: int, extra: list[tuple[bytes, bytes]], method: str, vary: bool) -> None:
    ex, w = wrapped("gzip, br", method=method)
    w.start_response(status, [JSON, *extra])
    w.finish(b"" if status in (204, 304) or method == "HEAD" else BODY)
    assert ex.status == status
    encodings = [v for n, v in ex.response_headers if n == b"content-encoding"]
    assert encodings == [v for n, v in extra if n.lower() == b"content-encoding"]
    assert (ex.header("vary") == "Accept-Encoding") is vary
    if status == 200 and method == "GET":
        assert bytes(ex.body) == BODY


STRONG = (b"etag", b'"v1"')


def _get_and_head(
    headers: list[tuple[bytes, bytes]], head_body: bytes
) -> tuple[FakeExchange, FakeExchange]:
    """The same response to a GET (with its body) and to a HEAD (with ``head_body``)."""
    get, w = wrapped("br, gzip")
    w.start_response(200, list(headers))
    w.finish(BODY)
    head, w = wrapped("br, gzip", method="HEAD")
    w.start_response(200, list(headers))
    w.finish(head_body)
    return get, head


def test_head_with_its_body_gets_the_head_of_get() -> None:
    """Frameworks give HEAD the body (Starlette, Django, Flask): it is compressed to
    learn its length, and the head is GET's, byte for byte."""
    declared = [JSON, STRONG, (b"accept-ranges", b"bytes"), (b"content-length", b"%d" % len(BODY))]
    for headers in (declared, [JSON, STRONG]):
        get, head = _get_and_head(headers, BODY)
        assert get.header("content-encoding") == "br"
        assert head.response_headers == get.response_headers
        assert head.header("etag") == 'W/"v1"' and head.header("accept-ranges") is None


def test_head_without_body_of_a_known_size_is_marked_compressed_without_length() -> None:
    """A static file's HEAD: GET's Content-Encoding, weak ETag, Vary and no
    Accept-Ranges; no Content-Length, since the compressed one is unknown."""
    headers = [JSON, STRONG, (b"accept-ranges", b"bytes"), (b"content-length", b"%d" % len(BODY))]
    get, head = _get_and_head(headers, b"")
    assert head.header("content-encoding") == "br" == get.header("content-encoding")
    assert head.header("etag") == 'W/"v1"' == get.header("etag")
    assert head.header("vary") == "Accept-Encoding" == get.header("vary")
    assert head.header("accept-ranges") is None
    assert head.header("content-length") is None and get.header("content-length") is not None
    assert head.finished and not head.body
    without_length = [(n, v) for n, v in head.response_headers if n != b"content-length"]
    assert without_length == [(n, v) for n, v in get.response_headers if n != b"content-length"]


@pytest.mark.parametrize(
    "headers",
    [[JSON, STRONG], [JSON, STRONG, (b"content-length", b"1000")]],
    ids=["size unknown", "smaller than min_size"],
)
def test_head_without_body_not_known_to_be_large_goes_as_it_is(
    headers: list[tuple[bytes, bytes]],
) -> None:
    head, w = wrapped("br", method="HEAD")
    w.start_response(200, headers)
    w.finish()
    assert head.header("content-encoding") is None
    assert head.header("etag") == '"v1"'
    assert head.header("vary") == "Accept-Encoding"


def test_head_streamed_gets_the_head_of_a_streamed_get() -> None:
    head, w = wrapped("gzip", method="HEAD")
    w.start_response(200, [JSON])
    w.write(BODY[:2000])
    w.write(BODY[2000:])
    w.finish()
    assert head.header("content-encoding") == "gzip"
    assert head.header("content-length") is None
    assert not head.body  # nothing compressed for nobody


def test_any_content_encoding_is_left_alone() -> None:
    ex, w = wrapped("gzip")
    w.start_response(200, [JSON, (b"content-encoding", b"identity")])
    w.finish(BODY)
    assert ex.header("content-encoding") == "identity"
    assert bytes(ex.body) == BODY


def test_min_size_with_declared_length() -> None:
    ex, w = wrapped("gzip")
    small = BODY[:1023]
    w.start_response(200, [JSON, (b"content-length", b"1023")])
    assert ex.response_started  # nothing to hold back: passed through at once
    w.finish(small)
    assert ex.header("content-encoding") is None
    assert ex.header("vary") == "Accept-Encoding"
    assert bytes(ex.body) == small
    ex, w = wrapped("gzip")
    w.start_response(200, [JSON, (b"content-length", b"1024")])
    w.finish(BODY[:1024])
    assert ex.header("content-encoding") == "gzip"


def test_min_size_with_whole_body_in_finish() -> None:
    ex, w = wrapped("gzip")
    w.start_response(200, [JSON])
    w.finish(b'{"small": true}')
    assert ex.header("content-encoding") is None
    assert ex.header("vary") == "Accept-Encoding"
    assert bytes(ex.body) == b'{"small": true}'
    assert isinstance(w, CompressingExchange) and w.coding == ""


def test_empty_body_not_compressed() -> None:
    ex, w = wrapped("gzip", CompressConfig(enabled=True, min_size=0))
    w.start_response(200, [JSON])
    w.finish()
    assert ex.header("content-encoding") is None
    assert bytes(ex.body) == b""


@pytest.mark.parametrize("accept", [None, "", "identity", "gzip;q=0", "deflate"])
def test_client_without_a_usable_coding(accept: str | None) -> None:
    ex, w = wrapped(accept)
    w.start_response(200, [JSON])
    w.finish(BODY)
    assert ex.header("content-encoding") is None
    assert ex.header("vary") == "Accept-Encoding"
    assert bytes(ex.body) == BODY


def test_several_accept_encoding_headers_are_joined() -> None:
    ex = FakeExchange(headers=[("accept-encoding", "gzip;q=0.5"), ("accept-encoding", "br")])
    filt = compress_filter(ON)
    assert filt is not None
    w = filt(ex)
    w.start_response(200, [JSON])
    w.finish(BODY)
    assert ex.header("content-encoding") == "br"


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        (b"Cookie", "Cookie, Accept-Encoding"),
        (b"accept-encoding", "accept-encoding"),
        (b"Origin, Accept-Encoding", "Origin, Accept-Encoding"),
        (b"*", "*"),
        (b"", "Accept-Encoding"),
    ],
)
def test_vary_merging(vary: bytes, expected: str) -> None:
    for accept in ("gzip", None):
        ex, w = wrapped(accept)
        w.start_response(200, [JSON, (b"Vary", vary)])
        w.finish(BODY)
        assert ex.header("vary") == expected
        assert len([n for n, _ in ex.response_headers if n == b"vary"]) == 1


@pytest.mark.parametrize(
    ("etag", "expected"),
    [(b'"abc"', 'W/"abc"'), (b'W/"abc"', 'W/"abc"')],
)
def test_etag_weakened_when_compressed(etag: bytes, expected: str) -> None:
    ex, w = wrapped("gzip")
    w.start_response(200, [JSON, (b"ETag", etag), (b"accept-ranges", b"bytes")])
    w.finish(BODY)
    assert ex.header("etag") == expected
    assert ex.header("accept-ranges") is None
    ex, w = wrapped(None)
    w.start_response(200, [JSON, (b"ETag", etag), (b"accept-ranges", b"bytes")])
    w.finish(BODY)
    assert ex.header("etag") == etag.decode()  # identity: the tag stays as it was
    assert ex.header("accept-ranges") == "bytes"


def test_app_header_list_not_mutated() -> None:
    ex, w = wrapped("gzip")
    headers = [JSON, (b"vary", b"Cookie"), (b"etag", b'"x"')]
    before = list(headers)
    w.start_response(200, headers)
    w.finish(BODY)
    assert headers == before


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_streaming_each_write_decodes_at_once(coding: str) -> None:
    """Every write comes out flushed: the client can decode it before the body ends."""
    ex, w = wrapped(coding)
    w.start_response(200, [(b"content-type", b"text/event-stream")])
    assert not ex.response_started
    w.write(b"")  # an empty first write sends the head (what SSE servers do)
    assert ex.response_started and ex.head_sent
    assert ex.header("content-encoding") == coding
    assert ex.header("content-length") is None
    if coding == "gzip":
        d: object = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif coding == "br":
        d = brotli.Decompressor()
    else:
        d = zstandard.ZstdDecompressor().decompressobj()
    got = b""
    for i in range(5):
        event = b"data: event %d\n\n" % i
        before = len(ex.writes)
        w.write(event)
        assert len(ex.writes) == before + 1  # something went out for this event
        piece = ex.writes[-1]
        out = d.process(piece) if coding == "br" else d.decompress(piece)  # type: ignore[attr-defined]
        assert out == event  # and it decodes to exactly this event, now
        got += out
    w.finish()
    assert ex.finished
    assert decode(coding, bytes(ex.body)) == got


def test_streaming_with_declared_length_drops_it() -> None:
    ex, w = wrapped("gzip")
    w.start_response(200, [JSON, (b"content-length", b"%d" % len(BODY))])
    half = len(BODY) // 2
    w.write(BODY[:half])
    assert ex.header("content-length") is None
    assert ex.header("content-encoding") == "gzip"
    w.finish(BODY[half:])
    assert gzip.decompress(bytes(ex.body)) == BODY


def test_zstd_streams_interleaved_do_not_mix() -> None:
    pairs = [wrapped("zstd") for _ in range(3)]
    for _, w in pairs:
        w.start_response(200, [JSON])
    for i in range(4):
        for n, (_, w) in enumerate(pairs):
            w.write(b"stream %d piece %d " % (n, i) * 100)
    for _, w in pairs:
        w.finish()
    for n, (ex, _) in enumerate(pairs):
        expected = b"".join(b"stream %d piece %d " % (n, i) * 100 for i in range(4))
        assert decode("zstd", bytes(ex.body)) == expected


def test_sendfile_through_the_compressor() -> None:
    data = BODY * 50  # several read blocks
    with tempfile.TemporaryFile() as f:
        f.write(b"xx" + data + b"yy")
        f.flush()
        ex, w = wrapped("br")

        async def go() -> None:
            w.start_response(200, [(b"content-type", b"text/plain")])
            await w.sendfile(f.fileno(), 2, len(data))
            w.finish()

        run_async(go())
    assert ex.sendfile_calls == []  # no zero-copy through a compressor
    assert ex.header("content-encoding") == "br"
    assert decode("br", bytes(ex.body)) == data


def test_sendfile_passes_through_when_not_compressed() -> None:
    with tempfile.TemporaryFile() as f:
        f.write(BODY)
        f.flush()
        ex, w = wrapped("gzip")

        async def go() -> None:
            w.start_response(200, [(b"content-type", b"image/png")])
            await w.sendfile(f.fileno(), 0, len(BODY))
            w.finish()

        run_async(go())
        assert ex.sendfile_calls == [(f.fileno(), 0, len(BODY))]
    assert bytes(ex.body) == BODY


def test_fail_before_body_gives_500() -> None:
    ex, w = wrapped("gzip")
    w.start_response(200, [JSON])
    w.fail(RuntimeError("boom"))
    assert ex.failed and ex.status == 500


def test_second_start_response_refused() -> None:
    _, w = wrapped("gzip")
    w.start_response(200, [JSON])
    with pytest.raises(InvalidResponse):
        w.start_response(200, [JSON])


def test_request_side_is_delegated() -> None:
    ex = FakeExchange(method="POST", target="/a%20b?x=1", body=b"hello")
    filt = compress_filter(ON)
    assert filt is not None
    w = filt(ex)
    h = w.head
    assert (h.method, h.path, h.raw_path, h.query_string) == ("POST", "/a b", b"/a%20b", b"x=1")
    assert w.head is ex.head and w.head.scheme == "http"
    assert w.body_complete and not w.disconnected
    assert run_async(w.receive_body()) == (b"hello", False)


def test_wrapper_has_slots() -> None:
    _, w = wrapped()
    assert not hasattr(w, "__dict__")


def test_missing_package_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    import bastion.edge.encoders as enc

    monkeypatch.setattr(enc, "codec_available", lambda name: name == "gzip")
    ex, w = wrapped("zstd, br, gzip")
    w.start_response(200, [JSON])
    w.finish(BODY)
    assert ex.header("content-encoding") == "gzip"
    monkeypatch.setattr(enc, "codec_available", lambda name: False)
    assert compress_filter(ON) is None


def test_read_block_boundaries_exact() -> None:
    # a file whose size is an exact multiple of the read block
    data = os.urandom(64 * 1024 * 2)
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        ex, w = wrapped("gzip")

        async def go() -> None:
            w.start_response(200, [(b"content-type", b"text/plain")])
            await w.sendfile(f.fileno(), 0, len(data))
            w.finish()

        run_async(go())
    assert gzip.decompress(bytes(ex.body)) == data


def test_bodies_with_an_etag_are_compressed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    filt = compress_filter(ON)
    assert filt is not None
    calls = []
    import bastion.edge.encoders as enc

    real = enc.GzipCodec.compress

    def counting(self: enc.GzipCodec, data: bytes) -> bytes:
        calls.append(len(data))
        return real(self, data)

    monkeypatch.setattr(enc.GzipCodec, "compress", counting)

    def get(body: bytes, etag: bytes | None) -> FakeExchange:
        ex = FakeExchange(headers=[("accept-encoding", "gzip")])
        w = filt(ex)
        headers = [JSON] + ([(b"etag", etag)] if etag else [])
        w.start_response(200, headers)
        w.finish(body)
        assert gzip.decompress(bytes(ex.body)) == body
        assert ex.header("content-length") == str(len(ex.body))
        return ex

    first = get(BODY, b'"v1"')
    second = get(BODY, b'"v1"')
    assert bytes(first.body) == bytes(second.body)
    assert len(calls) == 1
    get(bytes(bytearray(BODY)), b'"v1"')  # equal bytes, another object: still a hit
    assert len(calls) == 1
    get(BODY[:-10] + b"0123456789", b'"v1"')  # same tag, other bytes: never the wrong body
    assert len(calls) == 2
    get(BODY, None)  # no tag: no caching
    get(BODY, None)
    assert len(calls) == 4


def test_compressed_cache_is_bounded() -> None:
    from bastion.edge.compress import CompressedCache

    cache = CompressedCache(max_total=1000, max_item=400)
    for i in range(10):
        cache.put(b'"%d"' % i, "gzip", b"x" * 150, b"y" * 50)
    assert len(cache) == 5  # 200 bytes each within 1000
    assert cache.get(b'"9"', "gzip", b"x" * 150) == b"y" * 50
    assert cache.get(b'"0"', "gzip", b"x" * 150) is None  # the oldest went first
    assert cache.get(b'"9"', "br", b"x" * 150) is None
    cache.put(b'"big"', "gzip", b"x" * 500, b"y")  # larger than max_item: not kept
    assert cache.get(b'"big"', "gzip", b"x" * 500) is None
    cache.put(b'"9"', "gzip", b"z" * 150, b"w" * 50)  # replaced, not counted twice
    assert cache.get(b'"9"', "gzip", b"z" * 150) == b"w" * 50
    assert cache._size <= 1000


def test_missing_package_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import bastion.edge.encoders as enc

    monkeypatch.setattr(enc, "codec_available", lambda name: name != "br")
    monkeypatch.setattr(enc, "_warned", set())
    with caplog.at_level("WARNING", logger="bastion.error"):
        for _ in range(3):  # one filter per route
            assert compress_filter(ON) is not None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "br is skipped" in messages[0] and "brotli" in messages[0]


@pytest.mark.parametrize(
    "headers",
    [[(1, b"x")], [(b"content-type",)], [(b"content-type", "text/html")], [b"content-type"]],
)
def test_malformed_headers_refused_like_the_exchange_would(headers: list[object]) -> None:
    ex, w = wrapped("gzip")
    with pytest.raises((InvalidResponse, TypeError, ValueError)):
        w.start_response(200, headers)  # type: ignore[arg-type]
    assert ex.status is None
