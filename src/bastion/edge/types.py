"""What the edge pieces hand each other.

A route is a pipeline, composed once at start-up (:mod:`bastion.edge.pipeline`)::

    router -> response filters -> request filters -> handler

The router finds the route for a request and calls the route's composed
:data:`RouteHandler` with the exchange and a :class:`RouteMatch`. That callable first
wraps the exchange in the route's response filters, then runs its request filters in
order, then calls the handler with whatever exchange the filters handed on.

* A **response filter** (compression, headers) is an :data:`ExchangeFilter`: it wraps
  an exchange in an object that implements the whole
  :class:`~bastion.protocol.types.Exchange` interface and changes only the response
  (see :class:`~bastion.edge.wrap.ExchangeWrapper`). Because they wrap first, every
  answer of the route goes through them, a request filter's early 401 or 429 included.
* A **request filter** (access control, authentication, rate limiting, the real client
  address) is a :data:`RequestFilter`: it looks at the request before the handler and
  lets it through, answers it itself, or hands on a different request; it may need to
  await first. :data:`FilterResult` says how it tells which.
* A **handler** (an app, static files, a redirect, a fixed response) is a
  :data:`RouteHandler`: it answers the request and ends the exchange.

Any of these may hold resources that need starting and stopping (a connection pool, a
Redis client): such an object also implements :class:`Lifecycle`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

from bastion.edge.match import RouteMatch
from bastion.protocol.types import Exchange

__all__ = [
    "ExchangeFilter",
    "FilterResult",
    "Lifecycle",
    "RequestFilter",
    "RouteHandler",
    "RouteMatch",
]


RouteHandler = Callable[[Exchange, RouteMatch], None]
"""Answers one request on the event loop. Must not block; must end the exchange with
:meth:`~bastion.protocol.types.Exchange.finish` or
:meth:`~bastion.protocol.types.Exchange.fail` (possibly later, from a task it starts in
the worker's :class:`~bastion.tasks.WorkerTasks`)."""

ExchangeFilter = Callable[[Exchange], Exchange]
"""Wraps an exchange to change its response (compression, headers); built once per route.

A route's response filters are listed outermost first: the handler writes to the first,
which writes to the second, and so on; the last one writes to the connection's
exchange, so it has the last word on the response."""

FilterResult = (
    Exchange | None | Coroutine[Any, Any, "Exchange | None"] | asyncio.Future["Exchange | None"]
)
"""What a :data:`RequestFilter` returns:

* the exchange it was given: the request goes on unchanged (the common case, and the
  cheapest: nothing is allocated and nothing else is looked at);
* another exchange: the request goes on as this one, to the next filters and the
  handler; it must wrap the one given, usually an
  :class:`~bastion.edge.wrap.ExchangeWrapper` with its own ``head`` (see
  :class:`~bastion.edge.wrap.ExchangeWithHead`), e.g. the real client address;
* ``None``: the filter has answered the request itself and ended the exchange
  (``finish()`` after ``start_response(401, ...)``, 403, 429 with ``Retry-After``, or
  ``fail()``). Nothing else runs for this request. The answer goes through the route's
  response filters, like any other;
* a coroutine (what calling an ``async def`` gives): the filter must await something
  first (a Redis call, a sub-request). The pipeline runs the coroutine as a task of the
  worker's :class:`~bastion.tasks.WorkerTasks` and treats what it returns as above
  (the exchange, another exchange or ``None``), then goes on with the next filter. If
  it raises, the exchange fails (500, logged with the request); if the client goes
  away meanwhile, the task is cancelled and the exchange ends without an answer;
* an ``asyncio.Future`` of one of the above: the filter decides later without a task
  (e.g. decisions batched into one call to Redis). The pipeline goes on from the
  future's done callback; the filter must settle it within a bounded time (it is never
  cancelled for it); an exception set on it fails the exchange, and a client gone by
  then ends the exchange as a client that left.

A filter may decide per request whether it needs to await (a cache in memory in front
of a Redis call): a plain ``def`` that returns a coroutine only on a miss costs no task
on a hit. A filter that raises synchronously fails the exchange the same way."""

RequestFilter = Callable[[Exchange, RouteMatch], FilterResult]
"""Looks at a request before the route's handler (see :data:`FilterResult`).

Runs on the event loop: must not block. Built once per route at start-up, called once
per request; it should keep what it learned from the configuration, not look it up."""


@runtime_checkable
class Lifecycle(Protocol):
    """A filter or handler that holds resources across requests.

    ``startup()`` runs once per worker before the first request (open a connection
    pool, connect to Redis); ``shutdown()`` runs once after the last request and after
    the worker's request tasks have ended or been cancelled (close them). Both are
    awaited on the worker's event loop. An object with a lifecycle defines both (one may
    do nothing); an object that defines only one of them is refused at start-up.

    The site starts its apps first, then every filter and handler in the order of the
    routes (within a route: request filters in order, the handler, response filters
    outermost first), each object once even when several routes share it. If one
    fails to start, those already started are shut down, in reverse order, and the
    worker does not serve. At shutdown they stop in the reverse order of their start;
    an error while stopping one is logged and the others still stop.
    """

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...
