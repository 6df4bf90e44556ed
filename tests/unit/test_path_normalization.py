"""The path routes and static files see: normalised once, on the request head."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from bastion.config.schema import RouteConfig
from bastion.edge.router import Router
from bastion.edge.types import RouteMatch
from bastion.protocol.head import RequestHead, decode_path, has_dot_segment, normalize_path
from bastion.protocol.types import Exchange
from tests.unit.h1_harness import make_conn, parse_responses, settle


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/admin", "/admin"),
        (b"//admin", "/admin"),
        (b"///admin//x", "/admin/x"),
        (b"/./admin", "/admin"),
        (b"/%61dmin", "/admin"),
        (b"/%2e/admin", "/admin"),
        (b"/%2E%2E/admin", "/admin"),
        (b"/admin/../admin", "/admin"),
        (b"/x/y/../../admin", "/admin"),
        (b"/../../admin", "/admin"),  # never above the root
        (b"/a/b/..", "/a/"),
        (b"/a/.", "/a/"),
        (b"/..", "/"),
        (b"/a//../b", "/b"),  # slashes merged first, as a file system would
        (b"/admin/", "/admin/"),
        (b"/.well-known/x", "/.well-known/x"),  # a dot name is not a dot-segment
        (b"/a/...", "/a/..."),
        (b"/caf%C3%A9", "/caf\u00e9"),
        (b"/a%2Fb", "/a%2Fb"),  # an encoded slash is not a separator
        (b"/a%2fb/../c", "/c"),
        (b"/admin%2F..%2Fx", "/admin%2F..%2Fx"),
        (b"/a%20b", "/a b"),
        (b"*", "*"),
    ],
)
def test_normalize_path(raw: bytes, expected: str) -> None:
    assert normalize_path(raw, decode_path(raw)) == expected
    head = RequestHead("GET", raw, b"", "1.1", [], None, None)
    assert head.normalized_path == expected
    assert head.raw_path == raw and head.path == decode_path(raw)  # the app's, unchanged


def test_a_plain_path_costs_nothing() -> None:
    head = RequestHead("GET", b"/static/app.css", b"", "1.1", [], None, None)
    assert head.normalized_path is head.path


def test_replace_keeps_or_recomputes_the_normalized_path() -> None:
    head = RequestHead("GET", b"//a/./b", b"", "1.1", [], None, None)
    assert head.replace(client=("203.0.113.1", 1)).normalized_path == "/a/b"
    assert head.replace(raw_path=b"/x/%2e%2e/y").normalized_path == "/y"


def route(**kw: object) -> RouteConfig:
    kw.setdefault("return", {"body": "x"})
    return msgspec.convert(kw, RouteConfig)


EXACT = ["/admin", "//admin", "/%61dmin", "///%61dmin"]
PREFIX = [
    "/admin/users",
    "//admin//users",
    "/%61dmin/users",
    # the app sees PATH_INFO /admin/users: routed as that (see edge.router.routing_path)
    "/admin%2Fusers",
]
OTHER = ["/administrator", "/x/admin", "/%2561dmin"]
# clients remove dot-segments; a path with one is refused (400) before any route
DOTTED = [
    "/./admin",
    "/admin/../admin",
    "/%2e/%61dmin",
    "/x/../admin/users",
    "/a/..%2fb",
    "/x/..;/admin",
    "/x/.;y/admin",
]
# a ";" elsewhere is only text
NOT_DOTTED = ["/a;b/..x", "/x/...;/y", "/;../x", "/x/.a;b"]


def test_dot_segments_with_path_parameters() -> None:
    for path in DOTTED:
        assert has_dot_segment(path.encode()), path
    for path in NOT_DOTTED:
        assert not has_dot_segment(path.encode()), path


def test_semicolons_are_refused_unless_allowed() -> None:
    def statuses(paths: list[bytes], **settings: object) -> list[int]:
        async def main() -> list[int]:
            proto, transport, _ = make_conn(echo_path, **settings)
            for path in paths:
                proto.data_received(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path)
                await settle()
            return [r[0] for r in parse_responses(bytes(transport.data))]

        return asyncio.run(main())

    paths = [b"/a;b", b"/a%3Bb/c", b"/x/..;/admin"]
    assert statuses(paths[:1]) == [400]
    assert statuses(paths[1:2]) == [400]
    assert statuses(paths[:2], allow_path_semicolons=True) == [200, 200]
    assert statuses(paths[2:], allow_path_semicolons=True) == [400]  # (a dot-segment)


def echo_path(ex: Exchange) -> None:
    ex.start_response(200, [(b"content-length", b"0")])
    ex.finish()


def test_every_spelling_reaches_the_same_route_on_the_real_protocol() -> None:
    routes = [route(path="/admin", match="exact"), route(path="/admin/"), route(path="/")]
    seen: list[tuple[int, str, bytes]] = []

    def handler(ex: Exchange, match: RouteMatch) -> None:
        seen.append((match.route_index, match.rest, ex.head.raw_path))
        ex.start_response(200, [(b"content-length", b"0")])
        ex.finish()

    router = Router(routes, [handler] * len(routes), handler)

    async def main(paths: list[str]) -> bytes:
        proto, transport, _ = make_conn(router)
        for path in paths:
            proto.data_received(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path.encode())
            await settle()
        return bytes(transport.data)

    for path in DOTTED:
        out = asyncio.run(main([path]))
        assert [r[0] for r in parse_responses(out)] == [400], path
    assert not seen
    out = asyncio.run(main(EXACT + PREFIX + OTHER))
    assert [r[0] for r in parse_responses(out)] == [200] * len(EXACT + PREFIX + OTHER)
    got = {raw.decode(): (index, rest) for index, rest, raw in seen}
    for path in EXACT:
        assert got[path] == (0, "/"), path
    for path in PREFIX:
        assert got[path] == (1, "/users"), path
    for path in OTHER:
        assert got[path][0] == 2, path
