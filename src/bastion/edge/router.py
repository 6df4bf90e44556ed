"""Finding the route for a request: by host, then by path, then by method and headers.

The routes are compiled once. Among all routes that match a request, the one that comes
first in the configuration wins, whatever its kind; none is a 404.

Cost per request:

* host: one dict lookup for exact names, one per label for ``*.example.com`` patterns
  (``a.b.example.com`` tries ``.b.example.com``, ``.example.com``, ``.com``);
* exact paths: one dict lookup;
* prefixes: one dict lookup per ``/`` in the request path, up to the depth of the
  deepest prefix configured, however many prefix routes there are. A prefix therefore
  matches at a segment boundary: ``/static`` matches ``/static`` and ``/static/a.css``
  but not ``/staticfoo``; ``/static/`` matches ``/static/`` and below;
* regexes: tried one after another (only those before the best match found so far),
  so a long list of regex routes costs what it says.

A route limited to some methods also accepts HEAD when it accepts GET. A path that
matches only routes limited to other methods gets 405 with an ``Allow`` header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from bastion.config.schema import RouteConfig
from bastion.edge.types import RouteHandler, RouteMatch
from bastion.protocol.types import Exchange

_EMPTY: Final[dict[str, str]] = {}
# above any route index; small enough to stay a machine integer in the compiled build
_NO_LIMIT: Final = 1 << 30


class _Entry:
    """One compiled route in one path table."""

    __slots__ = ("anything", "handler", "headers", "index", "methods", "pattern", "slash")

    def __init__(
        self, index: int, route: RouteConfig, handler: RouteHandler, pattern: re.Pattern[str] | None
    ) -> None:
        self.index = index
        self.handler = handler
        methods = set(route.methods)
        if "GET" in methods:
            methods.add("HEAD")
        self.methods: frozenset[str] | None = frozenset(methods) if methods else None
        self.headers = tuple(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in route.match_headers.items()
        )
        self.pattern = pattern
        self.anything = self.methods is None and not self.headers  # any method, any headers
        # a prefix written with a trailing "/" needs something after its last segment
        self.slash = route.path.endswith("/")

    def accepts(self, method: str, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        for name, value in self.headers:
            for n, v in headers:
                if n == name and v == value:
                    break
            else:
                return False
        return True


class _Table:
    """The routes of one host pattern, by kind."""

    __slots__ = ("depth", "exact", "prefix", "regex")

    def __init__(self) -> None:
        self.exact: dict[str, list[_Entry]] = {}
        self.prefix: dict[str, list[_Entry]] = {}
        self.regex: list[_Entry] = []
        self.depth = 0  # segments in the deepest prefix

    def add(self, entry: _Entry, route: RouteConfig) -> None:
        if route.match == "exact":
            self.exact.setdefault(route.path, []).append(entry)
        elif route.match == "regex":
            self.regex.append(entry)
        else:
            key = route.path.rstrip("/")
            self.prefix.setdefault(key, []).append(entry)
            self.depth = max(self.depth, key.count("/"))

    def best(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], limit: int
    ) -> tuple[_Entry, dict[str, str], str] | None:
        """The route with the smallest index below ``limit`` that matches here, with its
        captures and rest; None if there is none."""
        best: tuple[_Entry, dict[str, str], str] | None = None
        entries = self.exact.get(path)
        if entries is not None:
            for e in entries:
                if e.index >= limit:
                    break
                if e.anything or e.accepts(method, headers):
                    limit = e.index
                    best = (e, _EMPTY, "/")
                    break
        prefix = self.prefix
        if prefix:
            depth = self.depth
            end = 0  # the key is path[:end]; the root prefix "/" is the key ""
            level = 0
            while True:
                key = path[:end] if end >= 0 else path
                entries = prefix.get(key)
                if entries is not None:
                    whole = end < 0  # the key is the whole path: no "/" follows
                    for e in entries:
                        if e.index >= limit:
                            break
                        if (whole and e.slash) or not (e.anything or e.accepts(method, headers)):
                            continue
                        limit = e.index
                        best = (e, _EMPTY, path[len(key) :] or "/")
                        break
                if end < 0 or level >= depth:
                    break
                level += 1
                end = path.find("/", end + 1)
        for e in self.regex:
            if e.index >= limit:
                break
            m = e.pattern.fullmatch(path)  # type: ignore[union-attr]
            if m is not None and (e.anything or e.accepts(method, headers)):
                captures = {k: v or "" for k, v in m.groupdict().items()}
                return (e, captures, path)
        return best


def routing_path(path: str) -> str:
    """The path a request is routed by: its normalized path, where an encoded slash
    (``%2F``, kept apart by normalisation) is taken as a slash after all. An app sees
    ``/admin%2Fusers`` as PATH_INFO ``/admin/users``, so it must reach the route of
    ``/admin/`` (and that route's access rules), not one that happens to match the
    undecoded text. Static files still refuse encoded slashes themselves."""
    if path.find("%2F") < 0:
        return path
    text = path.replace("%2F", "/")
    while text.find("//") >= 0:
        text = text.replace("//", "/")
    if text.find("/.") < 0:
        return text
    out: list[str] = []
    parts = text.split("/")
    for part in parts[1:]:
        if part == "..":
            if out:
                out.pop()
        elif part != ".":
            out.append(part)
    if parts[-1] == "." or parts[-1] == "..":
        out.append("")
    return "/" + "/".join(out)


def normalize_host(value: bytes) -> str:
    """The host name of a Host header: lower-case, without port or trailing dot. An
    empty port (``admin.example:``, which RFC 3986 allows) goes too: the name is the
    one a host route must match, as nginx and the frameworks read it."""
    host = value.decode("latin-1").lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and (not port or port.isdigit()):
        host = name
    return host.rstrip(".")


class Router:
    """The protocol :data:`~bastion.protocol.types.Handler` when routes are configured.

    ``handlers[i]`` answers for ``routes[i]``; ``not_found`` answers when no route
    matches (it gets a :class:`RouteMatch` with index -1).
    """

    __slots__ = ("_any", "_by_host", "_exact_hosts", "_methods", "_wild_hosts", "not_found")

    def __init__(
        self,
        routes: Sequence[RouteConfig],
        handlers: Sequence[RouteHandler],
        not_found: RouteHandler,
    ) -> None:
        self._exact_hosts: dict[str, _Table] = {}
        self._wild_hosts: dict[str, _Table] = {}  # ".example.com" -> table
        self._any: _Table | None = None
        self.not_found = not_found
        for i, (route, handler) in enumerate(zip(routes, handlers, strict=True)):
            pattern = re.compile(route.path) if route.match == "regex" else None
            entry = _Entry(i, route, handler, pattern)
            host = route.host.lower().rstrip(".")
            if not host:
                if self._any is None:
                    self._any = _Table()
                table = self._any
            elif host.startswith("*."):
                table = self._wild_hosts.setdefault(host[1:], _Table())
            else:
                table = self._exact_hosts.setdefault(host, _Table())
            table.add(entry, route)
        self._by_host = bool(self._exact_hosts or self._wild_hosts)
        limited = {m for route in routes for m in route.methods}
        self._methods = tuple(sorted(limited | {"HEAD"} if "GET" in limited else limited))

    # -- matching ----------------------------------------------------------------------
    def find(
        self, method: str, host: str, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[RouteHandler, RouteMatch] | None:
        """The handler and match for a request, or None. ``host`` as
        :func:`normalize_host` gives it ("" if there is none)."""
        best = None
        limit = _NO_LIMIT
        if self._by_host and host:
            table = self._exact_hosts.get(host)
            if table is not None:
                best = table.best(method, path, headers, limit)
                if best is not None:
                    limit = best[0].index
            wild = self._wild_hosts
            if wild:
                dot = host.find(".")
                while dot >= 0:
                    table = wild.get(host[dot:])
                    if table is not None:
                        found = table.best(method, path, headers, limit)
                        if found is not None:
                            best = found
                            limit = found[0].index
                    dot = host.find(".", dot + 1)
        if self._any is not None:
            found = self._any.best(method, path, headers, limit)
            if found is not None:
                best = found
        if best is None:
            return None
        entry, captures, rest = best
        return entry.handler, RouteMatch(entry.index, captures, rest)

    def allowed(self, host: str, path: str, headers: list[tuple[bytes, bytes]]) -> list[str]:
        """The methods some route would accept for this host, path and headers (for 405)."""
        return [m for m in self._methods if self.find(m, host, path, headers) is not None]

    def host_of(self, exchange: Exchange) -> str:
        if not self._by_host:
            return ""
        for name, value in exchange.head.headers:
            if name == b"host":
                return normalize_host(value)
        return ""

    # -- the protocol handler ------------------------------------------------------------
    def __call__(self, exchange: Exchange) -> None:
        host = self.host_of(exchange) if self._by_host else ""
        head = exchange.head
        path = head.normalized_path
        if path.find("%2F") >= 0:
            path = routing_path(path)
        found = self.find(head.method, host, path, head.headers)
        if found is None:
            self.not_found(exchange, RouteMatch(-1, {}, path))
            return
        handler, match = found
        head.route = match.route_index  # for the metrics and the access log
        handler(exchange, match)
