"""A route as a pipeline: request filters, a handler and response filters, composed once.

A :class:`Pipeline` takes one route's parts (see :mod:`bastion.edge.types` for what
each one is) and composes them at start-up into a single
:data:`~bastion.edge.types.RouteHandler`, :attr:`Pipeline.route_handler`, that the router
calls for every request of the route::

    exchange = response_filter_1(response_filter_2(exchange))   # outermost first
    for each request filter, in order:
        pass / answer early / hand on another exchange / await, then carry on
    handler(exchange, match)

Nothing about a route is decided per request: the parts are fixed tuples and the common
shapes (no request filters and up to two response filters, which is every route the
configuration can describe today) are plain nested calls, with no loop and no
allocation beyond the filters' own wrappers.

**Request filters.** A filter is called with the exchange and the route's
:class:`~bastion.edge.types.RouteMatch` and returns a
:data:`~bastion.edge.types.FilterResult`. A synchronous filter (the common case: an
address check, a credentials check, a rate counter in memory) returns at once and the
chain goes on in the same call, on the protocol's callback: no task, no coroutine. A
filter that has to await returns a coroutine instead (write the filter as ``async def``,
or return one from a plain ``def`` only when needed); the pipeline runs it as a task of
the worker's :class:`~bastion.tasks.WorkerTasks` and, when it is done, runs the rest of
the chain and the handler from that task. A filter that decides later without a
coroutine of its own (requests batched into one call to another service) may return an
``asyncio.Future`` instead: the chain goes on from the future's done callback, with no
task; the filter must settle the future within a bounded time, and a client that left
meanwhile is noticed when it is settled. While a coroutine waits:

* if the coroutine raises, the exchange fails (``fail(exc)``: 500 if nothing was sent,
  logged with the request's method and path);
* if the client goes away, the task is cancelled (the coroutine sees
  ``CancelledError`` at its ``await``) and the exchange ends as a client that left;
* if the worker stops and cancels its tasks, the exchange fails (500) and the task ends
  cancelled.

A filter ends an exchange early by answering through the exchange it was given (which
the route's response filters already wrap, so a 401 gets the route's security headers
too) and returning ``None``; a filter that returns ``None`` without ending the exchange
leaves the client waiting until the connection's timeouts close it.

**Lifecycle.** A filter or handler object that defines ``startup()`` and ``shutdown()``
(:class:`~bastion.edge.types.Lifecycle`) is started before the worker serves and shut
down after its request tasks have ended: :attr:`Pipeline.parts` lists a route's parts in
start order and :class:`Lifecycles` runs them (the site puts every route's parts in one).

This module is on the path of every routed request (its closures are what the router
calls) and is compiled with mypyc (setup.py ``COMPILED``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable, Sequence
from functools import partial
from typing import Any, Final

from bastion.edge.types import (
    ExchangeFilter,
    Lifecycle,
    RequestFilter,
    RouteHandler,
    RouteMatch,
)
from bastion.edge.wrap import ExchangeWrapper as _ExchangeWrapper
from bastion.observe.logging import logger
from bastion.protocol.h1_exchange import STAGE_FILTERED, H1Exchange
from bastion.protocol.types import ClientDisconnected, Exchange, Handler
from bastion.tasks import WorkerTasks

#: the classes checked on every request, as statics of the compiled build (a module
#: global read is a dictionary lookup each time)
ExchangeWrapper: Final = _ExchangeWrapper
_partial: Final = partial

__all__ = ["AppHandler", "Lifecycles", "Pipeline", "chain"]

_EMPTY: Final[dict[str, str]] = {}


class AppHandler:
    """The handler of a route to an app: the gateway's protocol handler, which needs no
    :class:`~bastion.edge.types.RouteMatch` (the pipeline calls it without one)."""

    __slots__ = ("app",)

    def __init__(self, app: Handler) -> None:
        self.app = app

    def __call__(self, exchange: Exchange, match: RouteMatch) -> None:
        self.app(exchange)


def chain(filters: Sequence[ExchangeFilter]) -> ExchangeFilter | None:
    """One :data:`~bastion.edge.types.ExchangeFilter` that wraps an exchange as
    ``filters`` do, outermost first; None when there are none."""
    filters = tuple(filters)
    if not filters:
        return None
    if len(filters) == 1:
        return filters[0]
    if len(filters) == 2:
        outermost = filters[0]
        innermost = filters[1]

        def two(exchange: Exchange) -> Exchange:
            return outermost(innermost(exchange))

        return two
    inward_out = filters[::-1]  # the one nearest the connection wraps first

    def many(exchange: Exchange) -> Exchange:
        for wrap in inward_out:
            exchange = wrap(exchange)
        return exchange

    return many


class Pipeline:
    """One route's request filters, handler and response filters (outermost first),
    and the callable composed from them once, here.

    ``tasks`` are the worker's: an async request filter runs in them.
    """

    __slots__ = ("handler", "request_filters", "response_filters", "route_handler", "tasks")

    def __init__(
        self,
        handler: RouteHandler,
        *,
        request_filters: Sequence[RequestFilter] = (),
        response_filters: Sequence[ExchangeFilter] = (),
        tasks: WorkerTasks,
    ) -> None:
        self.handler = handler
        self.request_filters = tuple(request_filters)
        self.response_filters = tuple(response_filters)
        self.tasks = tasks
        #: what the router calls for each request of the route
        self.route_handler: RouteHandler = self._compose()

    @property
    def parts(self) -> list[object]:
        """Every part, in the order they start: request filters, the handler, response
        filters (some may have no lifecycle; :class:`Lifecycles` picks those that do)."""
        return [*self.request_filters, self.handler, *self.response_filters]

    def _compose(self) -> RouteHandler:
        handler = self.handler
        if self.request_filters:
            if isinstance(handler, AppHandler):
                app = handler.app

                def call_app(exchange: Exchange, match: RouteMatch) -> None:
                    app(exchange)

                handler = call_app
            return _through_filters(
                handler, self.request_filters, chain(self.response_filters), self.tasks
            )
        if isinstance(handler, AppHandler):
            # calls as many as a hand-written route: the gateway's handler needs no match
            app = _answer_app(handler.app, self.response_filters)

            def app_route(exchange: Exchange, match: RouteMatch) -> None:
                app(exchange)

            return app_route
        return _answer(handler, self.response_filters)

    def protocol_handler(self) -> Handler:
        """The pipeline as the protocol's handler, for the default app without routes:
        its request filters get a match with ``route_index`` -1 and the whole path."""
        handler = self.handler
        if not self.request_filters and isinstance(handler, AppHandler):
            return _answer_app(handler.app, self.response_filters)
        route = self.route_handler

        def whole_site(exchange: Exchange) -> None:
            route(exchange, RouteMatch(-1, _EMPTY, exchange.head.path))

        return whole_site


# -- no request filters: the handler through the response filters, as plain calls -------
def _answer(handler: RouteHandler, filters: tuple[ExchangeFilter, ...]) -> RouteHandler:
    if not filters:
        return handler
    if len(filters) == 1:
        only = filters[0]

        def one(exchange: Exchange, match: RouteMatch) -> None:
            handler(only(exchange), match)

        return one
    if len(filters) == 2:  # compress and headers: without the loop of chain()
        outermost = filters[0]
        innermost = filters[1]

        def two(exchange: Exchange, match: RouteMatch) -> None:
            handler(outermost(innermost(exchange)), match)

        return two
    wrap = chain(filters)
    assert wrap is not None

    def many(exchange: Exchange, match: RouteMatch) -> None:
        handler(wrap(exchange), match)

    return many


def _answer_app(app: Handler, filters: tuple[ExchangeFilter, ...]) -> Handler:
    if not filters:
        return app
    if len(filters) == 1:
        only = filters[0]

        def one(exchange: Exchange) -> None:
            app(only(exchange))

        return one
    if len(filters) == 2:
        outermost = filters[0]
        innermost = filters[1]

        def two(exchange: Exchange) -> None:
            app(outermost(innermost(exchange)))

        return two
    wrap = chain(filters)
    assert wrap is not None

    def many(exchange: Exchange) -> None:
        app(wrap(exchange))

    return many


# -- request filters -------------------------------------------------------------------
def _through_filters(
    handler: RouteHandler,
    filters: tuple[RequestFilter, ...],
    wrap: ExchangeFilter | None,
    tasks: WorkerTasks,
) -> RouteHandler:
    def proceed(exchange: Exchange, match: RouteMatch, start: int = 0) -> None:
        """Run ``filters[start:]``, then the handler (the route's handler with start 0;
        the task of an async filter resumes the chain with a later start)."""
        if start == 0:
            if wrap is not None:
                exchange = wrap(exchange)
            todo = filters
        else:
            todo = filters[start:]
        done = start
        for check in todo:
            done += 1
            result = check(exchange, match)
            if result is exchange:
                continue
            if result is None:
                return  # answered by the filter
            if isinstance(result, ExchangeWrapper):
                exchange = result
            elif isinstance(result, asyncio.Future):
                result.add_done_callback(_partial(settled, exchange, match, done))
                return
            elif isinstance(result, Coroutine):
                tasks.spawn(awaiting(result, exchange, match, done))
                return
            else:
                exchange = result
        _note_filtered(exchange)
        handler(exchange, match)

    def resume(result: Exchange | None, match: RouteMatch, start: int) -> None:
        """Go on with ``filters[start:]`` once a filter that decided later let
        ``result`` through (None: it answered)."""
        if result is None:
            return
        try:
            proceed(result, match, start)
        except Exception as exc:
            result.fail(exc)

    def settled(
        exchange: Exchange, match: RouteMatch, start: int, decided: asyncio.Future[Any]
    ) -> None:
        """A filter's future is done: go on with the chain (or end the exchange)."""
        if exchange.disconnected:
            exchange.fail(ClientDisconnected())
            return
        if decided.cancelled():
            exchange.fail()
            return
        error = decided.exception()
        if error is not None:
            exchange.fail(error)
            return
        resume(decided.result(), match, start)

    async def awaiting(
        pending: Coroutine[Any, Any, Exchange | None],
        exchange: Exchange,
        match: RouteMatch,
        start: int,
    ) -> None:
        """Await an async filter's decision, then go on with the chain."""
        if exchange.disconnected:
            pending.close()
            exchange.fail(ClientDisconnected())
            return
        this = asyncio.current_task()
        assert this is not None
        watcher = tasks.spawn(_cancel_when_gone(exchange, this))
        try:
            result = await pending
        except asyncio.CancelledError:
            if not exchange.disconnected:
                exchange.fail()  # the worker is stopping
                raise
            exchange.fail(ClientDisconnected())
            return
        except Exception as exc:
            exchange.fail(exc)
            return
        finally:
            watcher.cancel()
        resume(result, match, start)

    return proceed


def _note_filtered(exchange: Exchange) -> None:
    """The request filters let ``exchange`` through: note when, for the slow-request
    log (only when it is on: the connection's exchange then keeps ``stages``)."""
    inner = exchange
    while isinstance(inner, ExchangeWrapper):
        inner = inner.inner
    if isinstance(inner, H1Exchange):
        stages = inner.stages
        if stages is not None:
            stages[STAGE_FILTERED] = time.perf_counter()


async def _cancel_when_gone(exchange: Exchange, task: asyncio.Task[Any]) -> None:
    await exchange.wait_disconnected()
    task.cancel()


# -- lifecycle -----------------------------------------------------------------------
class Lifecycles:
    """The parts with a :class:`~bastion.edge.types.Lifecycle` among ``parts``, each
    once, in order: started in that order, shut down in reverse.

    Raises ``TypeError`` for a part that defines only one of ``startup()`` and
    ``shutdown()`` (a resource opened and never closed, or the reverse).
    """

    def __init__(self, parts: Iterable[object]) -> None:
        self.parts: list[Lifecycle] = []
        self.started: list[Lifecycle] = []
        seen: set[int] = set()
        for part in parts:
            if id(part) in seen:
                continue
            seen.add(id(part))
            start = callable(getattr(part, "startup", None))
            stop = callable(getattr(part, "shutdown", None))
            if start and stop:
                assert isinstance(part, Lifecycle)
                self.parts.append(part)
            elif start or stop:
                has, lacks = ("startup", "shutdown") if start else ("shutdown", "startup")
                raise TypeError(f"{part!r} defines {has}() but not {lacks}(): define both")

    async def startup(self) -> None:
        """Start every part in order; if one fails, shut down those already started (in
        reverse order) and raise its error."""
        for part in self.parts:
            try:
                await part.startup()
            except Exception:
                logger.error("%r failed to start", part)
                await self.shutdown()
                raise
            self.started.append(part)

    async def shutdown(self) -> None:
        """Shut down the started parts, last started first; errors are logged."""
        while self.started:
            part = self.started.pop()
            try:
                await part.shutdown()
            except Exception:
                logger.exception("error while stopping %r", part)
