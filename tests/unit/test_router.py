"""The router: which route answers a request, and what it is told about the match."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from bastion.config.schema import RouteConfig
from bastion.edge.router import Router, normalize_host
from bastion.edge.types import RouteMatch
from bastion.protocol.types import Exchange


def route(**kw: object) -> RouteConfig:
    kw.setdefault("return", {"body": "x"})
    return msgspec.convert(kw, RouteConfig)


def make(routes: Sequence[RouteConfig]) -> Router:
    def handler(ex: Exchange, m: RouteMatch) -> None:  # pragma: no cover - never called
        raise AssertionError

    return Router(routes, [handler] * len(routes), handler)


def find(
    router: Router,
    path: str,
    *,
    method: str = "GET",
    host: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[str, str], str] | None:
    found = router.find(method, host, path, headers or [])
    if found is None:
        return None
    m = found[1]
    return m.route_index, m.captures, m.rest


def test_prefix_with_and_without_trailing_slash() -> None:
    r = make([route(path="/static/"), route(path="/media")])
    assert find(r, "/static/") == (0, {}, "/")
    assert find(r, "/static/css/a.css") == (0, {}, "/css/a.css")
    assert find(r, "/static") is None  # "/static/" needs the slash
    assert find(r, "/staticfoo") is None
    assert find(r, "/media") == (1, {}, "/")
    assert find(r, "/media/") == (1, {}, "/")
    assert find(r, "/media/x/y") == (1, {}, "/x/y")
    assert find(r, "/mediafoo") is None


def test_root_prefix_catches_everything_and_rest_is_the_whole_path() -> None:
    r = make([route(path="/")])
    assert find(r, "/") == (0, {}, "/")
    assert find(r, "/a/b?c") == (0, {}, "/a/b?c")


def test_exact_matches_only_that_path() -> None:
    r = make([route(path="/robots.txt", match="exact")])
    assert find(r, "/robots.txt") == (0, {}, "/")
    assert find(r, "/robots.txt/") is None
    assert find(r, "/robots.txtx") is None


def test_regex_full_match_with_named_captures() -> None:
    r = make([route(path=r"/users/(?P<id>\d+)(?:/(?P<tab>\w+))?", match="regex")])
    assert find(r, "/users/42") == (0, {"id": "42", "tab": ""}, "/users/42")
    assert find(r, "/users/42/posts") == (0, {"id": "42", "tab": "posts"}, "/users/42/posts")
    assert find(r, "/users/abc") is None
    assert find(r, "/x/users/42") is None  # fullmatch, not search


def test_first_route_in_file_order_wins_across_kinds() -> None:
    r = make(
        [
            route(path=r"/a/.*\.php", match="regex"),
            route(path="/a/"),
            route(path="/a/b", match="exact"),
            route(path="/"),
        ]
    )
    assert find(r, "/a/x.php") == (0, {}, "/a/x.php")
    assert find(r, "/a/b") == (1, {}, "/b")  # the prefix comes before the exact route
    assert find(r, "/b") == (3, {}, "/b")
    r2 = make([route(path="/"), route(path="/a/")])
    assert find(r2, "/a/x") == (0, {}, "/a/x")  # a shorter prefix that comes first wins


def test_longer_prefix_later_in_the_file_does_not_win_over_an_earlier_one() -> None:
    r = make([route(path="/api/"), route(path="/api/v2/")])
    assert find(r, "/api/v2/x")[0] == 0  # type: ignore[index]
    r = make([route(path="/api/v2/"), route(path="/api/")])
    assert find(r, "/api/v2/x") == (0, {}, "/x")
    assert find(r, "/api/v1/x") == (1, {}, "/v1/x")


def test_hosts_exact_wildcard_and_any() -> None:
    r = make(
        [
            route(host="api.example.com", path="/"),
            route(host="*.example.com", path="/"),
            route(path="/"),
        ]
    )
    assert find(r, "/", host="api.example.com")[0] == 0  # type: ignore[index]
    assert find(r, "/", host="www.example.com")[0] == 1  # type: ignore[index]
    assert find(r, "/", host="a.b.example.com")[0] == 1  # type: ignore[index]
    assert find(r, "/", host="example.com")[0] == 2  # type: ignore[index]
    assert find(r, "/", host="other.org")[0] == 2  # type: ignore[index]
    assert find(r, "/", host="")[0] == 2  # type: ignore[index]


def test_host_only_routes_do_not_match_other_hosts() -> None:
    r = make([route(host="Example.COM", path="/")])
    assert find(r, "/", host="example.com") is not None
    assert find(r, "/", host="example.org") is None
    assert find(r, "/") is None


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        (b"Example.com", "example.com"),
        (b"example.com:8080", "example.com"),
        (b"example.com.", "example.com"),
        (b"[::1]:8000", "[::1]"),
        (b"127.0.0.1:80", "127.0.0.1"),
        # an empty port (RFC 3986 allows it) must not make another name of a host route's
        (b"admin.test:", "admin.test"),
        (b"Admin.Test.:", "admin.test"),
        (b"[::1]:", "[::1]"),
    ],
)
def test_host_header_normalized(raw: bytes, host: str) -> None:
    assert normalize_host(raw) == host


def test_methods_and_head_with_get() -> None:
    r = make([route(path="/form", methods=["POST"]), route(path="/", methods=["GET"])])
    assert find(r, "/form", method="POST")[0] == 0  # type: ignore[index]
    assert find(r, "/form", method="GET")[0] == 1  # type: ignore[index]
    assert find(r, "/x", method="HEAD")[0] == 1  # type: ignore[index]
    assert find(r, "/x", method="DELETE") is None
    assert r.allowed("", "/x", []) == ["GET", "HEAD"]
    assert r.allowed("", "/form", []) == ["GET", "HEAD", "POST"]


def test_match_headers_exact_value() -> None:
    r = make(
        [
            route(path="/", match_headers={"X-Version": "2"}),
            route(path="/"),
        ]
    )
    assert find(r, "/", headers=[(b"x-version", b"2")])[0] == 0  # type: ignore[index]
    assert find(r, "/", headers=[(b"x-version", b"3")])[0] == 1  # type: ignore[index]
    assert find(r, "/")[0] == 1  # type: ignore[index]


def test_no_route_is_none() -> None:
    r = make([route(path="/a/"), route(path="/b", match="exact")])
    assert find(r, "/") is None
    assert find(r, "/c/a/") is None


def test_many_prefixes_only_look_at_the_path_segments() -> None:
    routes = [route(path=f"/p{i}/") for i in range(1000)]
    r = make(routes)
    assert find(r, "/p999/x") == (999, {}, "/x")
    assert find(r, "/p5/a/b/c") == (5, {}, "/a/b/c")
    assert find(r, "/q/x") is None
