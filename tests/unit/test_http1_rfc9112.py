"""RFC 9112 sections 3 and 7.1 on the real protocol: the request line's grammar, the Host
rules, HTTP/0.9 lines, chunk extensions and trailers.

These run on whichever build is installed: the compiled modules in the main pass of
``make test``, the interpreted ones in its pure pass (the compiled build once answered
400 to ``GET http://a.example HTTP/1.1``, a valid target the pure build accepted).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.h1_framing import MAX_CHUNK_EXTENSIONS
from tests.unit.h1_harness import FakeTransport, echo_handler, make_conn, parse_responses, settle

Seen = list[tuple[str, bytes, str, bytes, dict[bytes, bytes]]]


def recording(seen: Seen) -> Any:
    """A handler that records (method, raw path, path, query, headers) and answers 200."""

    def handler(ex: H1Exchange) -> None:
        h = ex.head
        seen.append((h.method, h.raw_path, h.path, h.query_string, dict(h.headers)))
        ex.start_response(200, [(b"content-length", b"2")])
        ex.finish(b"ok")

    return handler


def exchange(raw: bytes | list[bytes], **settings: Any) -> tuple[list[int], Seen, FakeTransport]:
    """Feed ``raw`` (or its pieces) to a new connection: (statuses, heads seen, transport)."""
    seen: Seen = []
    pieces = [raw] if isinstance(raw, bytes) else raw

    async def main() -> FakeTransport:
        proto, transport, _ = make_conn(recording(seen), **settings)
        for piece in pieces:
            proto.data_received(piece)
            await settle()
        return transport

    transport = asyncio.run(main())
    statuses = [r[0] for r in parse_responses(bytes(transport.data))]
    return statuses, seen, transport


# -- Host (RFC 9112 3.2) ---------------------------------------------------------------
def test_http11_without_host_is_400() -> None:
    statuses, seen, transport = exchange(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")
    assert statuses == [400] and seen == [] and transport.done


def test_http10_without_host_is_served() -> None:
    statuses, seen, _ = exchange(b"GET / HTTP/1.0\r\n\r\n")
    assert statuses == [200] and len(seen) == 1


@pytest.mark.parametrize(
    "host",
    [b"", b"a.example", b"a.example:8080", b"a.example:", b"127.0.0.1", b"[::1]:80", b"[::1]"],
)
def test_valid_hosts_are_served(host: bytes) -> None:
    statuses, seen, _ = exchange(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert statuses == [200]
    assert seen[0][4][b"host"] == host


@pytest.mark.parametrize(
    "host",
    [b"a b", b"a/b", b"a@b", b"a?b", b"a#b", b"[::1", b"[]", b"a:80x", b"a:b:c", b"a\\b", b'a"b'],
)
def test_malformed_host_is_400(host: bytes) -> None:
    statuses, seen, _ = exchange(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert statuses == [400] and seen == []


# -- the four target forms (RFC 9112 3.2.1-3.2.4) --------------------------------------
@pytest.mark.parametrize(
    ("target", "authority", "raw_path", "query"),
    [
        (b"http://a.example", b"a.example", b"/", b""),  # no path: "/" (3.2.2)
        (b"http://a.example?x=1", b"a.example", b"/", b"x=1"),
        (b"http://a.example:8080/p/q?z", b"a.example:8080", b"/p/q", b"z"),
        (b"HTTPS://A.example/", b"A.example", b"/", b""),
        (b"http://[::1]:81/x", b"[::1]:81", b"/x", b""),
    ],
)
def test_absolute_form_authority_replaces_host(
    target: bytes, authority: bytes, raw_path: bytes, query: bytes
) -> None:
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: other.example\r\n\r\n"
    statuses, seen, _ = exchange(raw)
    assert statuses == [200]
    method, got_raw, _, got_query, headers = seen[0]
    assert (got_raw, got_query) == (raw_path, query)
    assert headers[b"host"] == authority


def test_absolute_form_gives_an_http10_request_its_host() -> None:
    statuses, seen, _ = exchange(b"GET http://a.example/x HTTP/1.0\r\n\r\n")
    assert statuses == [200]
    assert seen[0][4][b"host"] == b"a.example" and seen[0][1] == b"/x"


@pytest.mark.parametrize(
    "target",
    [
        b"ftp://a.example/x",  # not an http(s) URI
        b"http:///x",  # empty host (RFC 9110 4.2.1)
        b"http://user@a.example/x",  # userinfo (RFC 9110 4.2.4)
        b"http://:80/x",
        b"http://a.example:8x/",
        b"a.example:80",  # authority-form is for CONNECT only
        b"*",  # asterisk-form is for OPTIONS only
        b"/a#frag",  # no fragment in a request target
        b"http://a.example/#frag",
    ],
)
def test_target_not_allowed_for_get_is_400(target: bytes) -> None:
    statuses, seen, transport = exchange(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert statuses == [400] and seen == [] and transport.done


def test_asterisk_form_for_options() -> None:
    statuses, seen, _ = exchange(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert statuses == [200] and seen[0][1] == b"*"


@pytest.mark.parametrize(
    ("target", "status"),
    [(b"a.example:443", 501), (b"[::1]:443", 501), (b"/", 400), (b"a.example", 400)],
)
def test_connect_needs_authority_form_and_is_not_supported(target: bytes, status: int) -> None:
    raw = b"CONNECT " + target + b" HTTP/1.1\r\nHost: a.example:443\r\n\r\n"
    statuses, seen, transport = exchange(raw)
    assert statuses == [status] and seen == [] and transport.done


# -- the request line's spaces and HTTP/0.9 ----------------------------------------------
@pytest.mark.parametrize(
    "line", [b"GET  / HTTP/1.1", b"GET /  HTTP/1.1", b"GET   /x?y HTTP/1.1", b"GET /x   HTTP/1.1"]
)
def test_more_than_one_space_in_the_request_line_is_400(line: bytes) -> None:
    statuses, seen, _ = exchange(line + b"\r\nHost: a\r\n\r\n")
    assert statuses == [400] and seen == []


def test_double_space_in_a_pipelined_request_line() -> None:
    good = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nGET  /x H"
    statuses, seen, _ = exchange(good + b"GET  /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert statuses == [200, 400] and len(seen) == 1


def test_double_spaces_elsewhere_are_not_the_request_line() -> None:
    raw = b"GET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: x  y\r\n\r\n"
    statuses, _, _ = exchange(raw + raw.replace(b"/a", b"/b"))
    assert statuses == [200, 200]


@pytest.mark.parametrize("pieces", [[b"GET /\r\n"], [b"GET /\n"], [b"GET /", b"\r\n"]])
def test_http09_request_line_is_answered_at_once(pieces: list[bytes]) -> None:
    statuses, seen, transport = exchange(pieces)
    assert statuses == [505] and seen == [] and transport.done


def test_a_request_line_arriving_in_pieces_is_not_http09() -> None:
    statuses, _, _ = exchange([b"GET /x HTT", b"P/1.1\r\n", b"Host: a\r\n", b"\r\n"])
    assert statuses == [200]


# -- chunk extensions and trailers (RFC 9112 7.1) -----------------------------------------
HEAD_CHUNKED = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def run_echo(pieces: list[bytes], **settings: Any) -> tuple[list[tuple[int, bytes]], bool]:
    async def main() -> FakeTransport:
        proto, transport, _ = make_conn(echo_handler, **settings)
        for piece in pieces:
            proto.data_received(piece)
            await settle()
            if transport.done:
                break
        return transport

    transport = asyncio.run(main())
    return [(s, b) for s, _, b in parse_responses(bytes(transport.data))], transport.done


@pytest.mark.parametrize("piece", [1 << 20, 64 * 1024])
def test_a_huge_chunk_extension_is_413(piece: int) -> None:
    ext = b"5;" + b"x" * (1 << 20)
    pieces = [HEAD_CHUNKED] + [ext[i : i + piece] for i in range(0, len(ext), piece)]
    pieces.append(b"\r\nhello\r\n0\r\n\r\n")
    responses, done = run_echo(pieces)
    assert [s for s, _ in responses] == [413] and done


def test_extensions_over_the_limit_across_many_chunks_are_413() -> None:
    chunk = b"1;" + b"e" * 1000 + b"\r\nx\r\n"
    count = MAX_CHUNK_EXTENSIONS // 1000 + 2
    responses, done = run_echo([HEAD_CHUNKED, chunk * count, b"0\r\n\r\n"])
    assert [s for s, _ in responses] == [413] and done


def test_ordinary_chunks_and_small_extensions_are_served() -> None:
    # 3,000 one-byte chunks, each with a small extension: framing, not extensions
    chunks = b"".join(b"1;n=%d\r\n%c\r\n" % (i % 10, 97 + i % 26) for i in range(3000))
    body = bytes(97 + i % 26 for i in range(3000))
    pieces = [HEAD_CHUNKED] + [chunks[i : i + 4096] for i in range(0, len(chunks), 4096)]
    responses, _ = run_echo([*pieces, b"0\r\n\r\n"])
    assert responses == [(200, body)]


def test_trailers_are_dropped_and_leave_nothing_behind() -> None:
    # once kept in a list shared by every connection: after a few, every trailer was 431
    raw = HEAD_CHUNKED + b"3\r\nabc\r\n0\r\nX-One: 1\r\nX-Two: 2\r\n\r\n"
    for _ in range(5):
        responses, _ = run_echo([raw], max_header_count=4)
        assert responses == [(200, b"abc")]


def test_trailers_count_against_the_header_size() -> None:
    raw = HEAD_CHUNKED + b"3\r\nabc\r\n0\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n"
    responses, done = run_echo([raw], max_header_size=4096)
    assert [s for s, _ in responses] == [431] and done
