"""The ``redirect`` handler: a status and a ``Location``, with no body.

The target may hold placeholders, replaced for each request: ``{name}`` for a named
group of a regex route, ``{path}`` for the path after a prefix route's prefix (the whole
path for exact and regex routes) and ``{query}`` for the query string. Substituted paths
are percent-encoded again, so a decoded space goes out as ``%20``. When the query is
empty, ``?{query}`` disappears as a whole, so ``/new{path}?{query}`` never ends in ``?``.
The template is split once at start-up; a target without placeholders is a fixed
response.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from bastion.config.schema import RedirectConfig
from bastion.edge.respond import FixedResponse
from bastion.edge.types import RouteHandler, RouteMatch
from bastion.protocol.types import Exchange

_PLACEHOLDER = re.compile(r"(\?)?\{([^{}]*)\}")
# what stays as it is in a path: RFC 3986 pchar and "/"
_SAFE = "/:@!$&'()*+,;=-._~"


class Redirect:
    """Redirect with placeholders filled in per request."""

    __slots__ = ("parts", "status")

    def __init__(self, status: int, parts: list[tuple[str, str]]) -> None:
        self.status = status
        # (kind, text): ("text", literal), ("path" | "query" | "capture", name), and
        # ("?query", "") for a "?" that goes only with a non-empty query
        self.parts = parts

    def location(self, exchange: Exchange, match: RouteMatch) -> str:
        out = []
        for kind, text in self.parts:
            if kind == "text":
                out.append(text)
            elif kind == "path":
                out.append(quote(match.rest, safe=_SAFE))
            elif kind == "capture":
                out.append(quote(match.captures.get(text, ""), safe=_SAFE))
            elif exchange.head.query_string:  # "query" or "?query"
                query = exchange.head.query_string.decode("latin-1")
                out.append("?" + query if kind == "?query" else query)
        return "".join(out)

    def __call__(self, exchange: Exchange, match: RouteMatch) -> None:
        location = self.location(exchange, match).encode("latin-1", "replace")
        exchange.start_response(self.status, [(b"location", location), (b"content-length", b"0")])
        exchange.finish()


def redirect_handler(cfg: RedirectConfig) -> RouteHandler:
    """The handler of a route's ``redirect`` table."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(cfg.to):
        if m.start() > pos:
            parts.append(("text", cfg.to[pos : m.start()]))
        name = m.group(2)
        if name == "query":
            parts.append(("?query" if m.group(1) else "query", ""))
        else:
            if m.group(1):
                parts.append(("text", "?"))
            parts.append(("path", "") if name == "path" else ("capture", name))
        pos = m.end()
    if pos < len(cfg.to):
        parts.append(("text", cfg.to[pos:]))
    if all(kind == "text" for kind, _ in parts):
        return FixedResponse(cfg.status, b"", headers=(("Location", cfg.to),))
    return Redirect(cfg.status, parts)
