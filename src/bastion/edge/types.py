"""What the edge pieces hand each other.

The router finds the route for a request and calls that route's :data:`RouteHandler`
with the exchange and a :class:`RouteMatch`. Response filters (compression, headers) are
:data:`ExchangeFilter` functions: each wraps an exchange in an object that implements the
whole :class:`~bastion.protocol.types.Exchange` interface and changes only the response,
so the wrapped exchange can be given to an app gateway, the static handler or anything
else. Filters are chosen once per route at start-up, never per request.
"""

from __future__ import annotations

from collections.abc import Callable

from bastion.protocol.types import Exchange


class RouteMatch:
    """What the router found for one request."""

    __slots__ = ("captures", "rest", "route_index")

    def __init__(self, route_index: int, captures: dict[str, str], rest: str) -> None:
        #: position of the route in ``config.routes``
        self.route_index = route_index
        #: named groups of a regex route (matched against the percent-decoded path), else {}
        self.captures = captures
        #: prefix route: the decoded path after the prefix, starting with "/" ("/" if
        #: nothing follows); exact route: "/"; regex route: the whole decoded path
        self.rest = rest

    def __repr__(self) -> str:
        return f"RouteMatch({self.route_index}, {self.captures!r}, {self.rest!r})"


RouteHandler = Callable[[Exchange, RouteMatch], None]
"""Answers one request on the event loop. Must not block; must end the exchange with
:meth:`~bastion.protocol.types.Exchange.finish` or
:meth:`~bastion.protocol.types.Exchange.fail` (possibly later, from a task it starts)."""

ExchangeFilter = Callable[[Exchange], Exchange]
"""Wraps an exchange to change its response (compression, headers); built once per route."""
