"""Properties of the HTTP/1.1 protocol on any input (hypothesis), on the real protocol.

- However a valid pipelined byte stream is split into reads, the same requests (method,
  target, headers, body) reach the handler and the same responses go back.
- Random or mangled bytes never raise out of the protocol, never reach the handler as
  an ambiguous request, and always end in a response or a close.

Bounded so that the suite stays fast: a few hundred examples, no deadline.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.types import ClientDisconnected
from tests.unit.h1_harness import FakeTransport, make_conn, parse_responses, settle

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

Request = tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes]

# -- a recording handler -----------------------------------------------------------------
TOKEN = b"!#$%&'*+-.^_`|~"


def check_unambiguous(ex: H1Exchange) -> None:
    """What no request reaching a handler may be."""
    head = ex.head
    names = [name for name, _ in head.headers]
    assert head.http_version in ("1.0", "1.1")
    assert names.count(b"host") <= 1
    if head.http_version == "1.1":
        assert names.count(b"host") == 1
    assert not (b"content-length" in names and b"transfer-encoding" in names)
    assert names.count(b"content-length") <= 1
    assert head.method and all(c.isalnum() or c.encode() in TOKEN for c in head.method)
    assert head.raw_path[:1] == b"/" or (head.raw_path == b"*" and head.method == "OPTIONS")
    assert head.raw_path.find(b"#") < 0 and head.raw_path.find(b" ") < 0


def recorder(seen: list[Request]) -> object:
    def handler(ex: H1Exchange) -> None:
        check_unambiguous(ex)

        async def run() -> None:
            chunks = []
            while True:
                try:
                    data, more = await ex.receive_body()
                except ClientDisconnected:
                    ex.fail(None)  # as the gateways do when the client has gone
                    return
                chunks.append(data)
                if not more:
                    break
            h = ex.head
            seen.append((h.method, h.raw_path, h.query_string, list(h.headers), b"".join(chunks)))
            body = b"%d" % len(seen)
            ex.start_response(200, [(b"content-length", b"%d" % len(body))])
            ex.finish(body)

        asyncio.get_running_loop().create_task(run())

    return handler


def feed(pieces: list[bytes], *, eof: bool = False) -> tuple[list[Request], FakeTransport, object]:
    seen: list[Request] = []

    async def main() -> tuple[FakeTransport, object]:
        proto, transport, _ = make_conn(recorder(seen))  # type: ignore[arg-type]
        for piece in pieces:
            if transport.done:
                break
            proto.data_received(piece)
            await settle()
        ended: object = "not sent"
        if eof and not transport.done:
            ended = proto.eof_received()
        for _ in range(5):
            await settle()
        return transport, ended

    transport, ended = asyncio.run(main())
    return seen, transport, ended


# -- valid requests ------------------------------------------------------------------------
segment = (
    st.text(alphabet="abcxyz019-._~%41", min_size=0, max_size=6)
    .map(lambda s: s.replace("%", "%25"))
    .filter(lambda s: s not in (".", ".."))  # dot-segments are refused (another test)
)
paths = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
queries = st.one_of(st.just(""), st.text(alphabet="abc=&19", min_size=1, max_size=8))
field_values = st.text(alphabet="abcXYZ 019-;=,", min_size=0, max_size=12).map(str.strip)
extra_headers = st.lists(
    st.tuples(st.sampled_from(["Accept", "X-A", "User-Agent", "Cookie"]), field_values),
    max_size=3,
)
bodies = st.binary(max_size=300)


@st.composite
def valid_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]))
    target = draw(paths)
    query = draw(queries)
    if query:
        target += "?" + query
    lines = [f"{method} {target} HTTP/1.1", "Host: t.example"]
    lines += [f"{name}: {value}" for name, value in draw(extra_headers)]
    body = draw(bodies) if method in ("POST", "PUT") else b""
    if method in ("POST", "PUT") and draw(st.booleans()):
        # chunked, in random chunk sizes, with an extension now and then
        lines.append("Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        framed = b""
        start = 0
        for end in [*cuts, len(body)]:
            if end > start:
                ext = b";x=1" if draw(st.booleans()) else b""
                framed += b"%x%s\r\n%s\r\n" % (end - start, ext, body[start:end])
                start = end
        framed += b"0\r\n\r\n"
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + framed
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, start = [], 0
    for p in [*points, len(data)]:
        if p > start:
            out.append(data[start:p])
            start = p
    return out


@SETTINGS
@given(
    st.lists(valid_request(), min_size=1, max_size=4), st.lists(st.integers(0, 10_000), max_size=12)
)
def test_any_split_of_a_pipelined_stream_gives_the_same_requests(
    requests: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(requests)
    whole, t1, _ = feed([stream])
    pieces, t2, _ = feed(split(stream, cuts))
    assert len(whole) == len(requests)
    assert pieces == whole
    statuses = [r[0] for r in parse_responses(bytes(t2.data))]
    assert statuses == [200] * len(requests)
    assert bytes(t1.data).count(b"HTTP/1.1 200") == len(requests)


# -- hostile input ----------------------------------------------------------------------------
HEAD_BITS = [
    b"GET ",
    b"POST ",
    b"OPTIONS ",
    b"CONNECT ",
    b"/",
    b"*",
    b"http://a",
    b"a:80",
    b" ",
    b"  ",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/0.9",
    b"\r\n",
    b"\n",
    b"\r",
    b"Host: a",
    b"Host: b",
    b"Content-Length: 3",
    b"Content-Length: 0",
    b"Content-Length: -1",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding : chunked",
    b"Expect: 100-continue",
    b"Connection: upgrade",
    b"Upgrade: websocket",
    b"abc",
    b"0\r\n\r\n",
    b"3;x\r\nabc\r\n",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"#",
    b"%2F",
    b"?q",
    b":",
    b"\t",
]
hostile = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(HEAD_BITS), max_size=24).map(b"".join),
)


# whole header lines that make a valid head ambiguous or invalid
HEADER_LINES = [
    b"Host: b\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Content-Length : 3\r\n",
    b" folded\r\n",
    b"X-A: a\x00b\r\n",
]


@st.composite
def mangled_request(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_request()))
    if draw(st.booleans()):
        # a header line more, after the request line or after another header line
        lines = [i + 2 for i in range(len(data)) if data[i : i + 2] == b"\r\n"][:3]
        at = draw(st.sampled_from(lines))
        data[at:at] = draw(st.sampled_from(HEADER_LINES))
        return bytes(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        what = draw(st.sampled_from(HEAD_BITS))
        if draw(st.booleans()) and at < len(data):
            data[at : at + len(what)] = what
        else:
            data[at:at] = what
    return bytes(data)


@example(
    parts=[b"GET / HTTP/1.1\r\nContent-Length:3\r\nHost:\r\n\r\n"], cuts=[]
)  # body never comes
@SETTINGS
@given(
    st.lists(st.one_of(hostile, mangled_request(), valid_request()), min_size=1, max_size=4),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_any_bytes_end_in_responses_or_a_close(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    # the handler's check_unambiguous raises inside the test if an ambiguous request
    # reaches it; anything raised out of data_received fails the test too
    seen, transport, ended = feed(split(stream, cuts), eof=True)
    out = bytes(transport.data)
    # every request that reached the handler was answered, in order, before anything else
    statuses = [r[0] for r in parse_responses(out)] if out.endswith(b"\r\n\r\n") or seen else []
    assert statuses[: len(seen)] == [200] * len(seen) or not seen
    # and the connection ends: closed or half-closed by the server, or its client's end
    # of stream leaves the transport to close itself (eof_received returning false)
    assert transport.done or not ended
