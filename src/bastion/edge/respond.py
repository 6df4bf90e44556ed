"""Fixed responses: the ``return`` handler, and the router's 404 and 405.

Everything about a fixed response is known at start-up, so its head is built and checked
once and each request only adds the date (and the server's name) and its length. HEAD
gets the same head without the body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from bastion.config.schema import ReturnConfig
from bastion.edge.types import RouteMatch
from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.h1_head import prepared_head
from bastion.protocol.types import Exchange

# statuses that never carry a body (RFC 9110 6.4.1)
_NO_BODY: Final = frozenset({204, 304})


class FixedResponse:
    """A :data:`~bastion.edge.types.RouteHandler` that always sends the same response."""

    __slots__ = ("body", "body_headers", "headers", "prepared", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = b"" if status in _NO_BODY else body
        head: list[tuple[bytes, bytes]] = []
        if content_type and status not in _NO_BODY:
            head.append((b"content-type", content_type.encode("latin-1")))
        for name, value in headers:
            head.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        #: without Content-Length: the exchange sets it from the body ``finish`` gets
        #: (no header to parse back on every request)
        self.body_headers = list(head)
        if status not in _NO_BODY:
            head.append((b"content-length", str(len(self.body)).encode("ascii")))
        #: with it: a HEAD's answer tells the length of the body it does not carry
        self.headers = head
        #: the status line and ``body_headers`` as bytes, checked once (None if the
        #: exchange must see a header: e.g. a configured Connection or Server)
        self.prepared = prepared_head(status, self.body_headers)

    def __call__(self, exchange: Exchange, match: RouteMatch) -> None:
        prepared = self.prepared
        if exchange.head.method == "HEAD":
            exchange.start_response(self.status, self.headers.copy())
            exchange.finish(b"")
        elif prepared is not None and isinstance(exchange, H1Exchange):
            # the connection's own exchange (no response filter wraps it): the head
            # checked at start-up, sent as it is
            exchange.start_prepared(self.status, prepared)
            exchange.finish(self.body)
        else:
            exchange.start_response(self.status, self.body_headers.copy())
            exchange.finish(self.body)


def return_handler(cfg: ReturnConfig) -> FixedResponse:
    """The handler of a route's ``return`` table."""
    return FixedResponse(
        cfg.status, cfg.body.encode("utf-8"), cfg.content_type, tuple(cfg.headers.items())
    )


NOT_FOUND: Final = FixedResponse(404, b"Not Found\n", "text/plain; charset=utf-8")


def method_not_allowed(allowed: Sequence[str]) -> FixedResponse:
    """405 with the ``Allow`` header (RFC 9110 15.5.6)."""
    return FixedResponse(
        405,
        b"Method Not Allowed\n",
        "text/plain; charset=utf-8",
        (("Allow", ", ".join(allowed)),),
    )
