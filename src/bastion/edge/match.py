"""What the router found for a request (its own module so that it is compiled with the
router: one is made for every routed request)."""

from __future__ import annotations

__all__ = ["RouteMatch"]


class RouteMatch:
    """What the router found for one request."""

    __slots__ = ("captures", "rest", "route_index")

    def __init__(self, route_index: int, captures: dict[str, str], rest: str) -> None:
        #: position of the route in ``config.routes`` (-1: no route; without routes,
        #: the request filters of the default app get -1 and the whole path as ``rest``)
        self.route_index = route_index
        #: named groups of a regex route (matched against the percent-decoded path), else {}
        self.captures = captures
        #: prefix route: the decoded path after the prefix, starting with "/" ("/" if
        #: nothing follows); exact route: "/"; regex route: the whole decoded path
        self.rest = rest

    def __repr__(self) -> str:
        return f"RouteMatch({self.route_index}, {self.captures!r}, {self.rest!r})"
