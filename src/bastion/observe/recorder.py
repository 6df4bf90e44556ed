"""A worker's side of the metrics: counting into its own slot of the board.

:class:`Recorder` takes the access log's place in the protocol (the hook called once per
finished response), counts the response into the worker's slot with a handful of
in-memory increments, then hands the call to the real access log if there is one.
:meth:`Recorder.start` adds what is sampled rather than counted: once a second it
writes the open connections, the requests in progress, the tracker's evictions and
the event loop's lag; and a ``gc.callbacks`` hook times every collection.
"""

from __future__ import annotations

import asyncio
import gc
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from bastion.observe.accesslog import AccessLog
from bastion.observe.board import (
    AUTH_REJECTED,
    BUCKETS,
    BYTES_IN,
    BYTES_OUT,
    CONNECTIONS,
    EVICTED,
    GC_COLLECTED,
    GC_COLLECTIONS,
    GC_PAUSE,
    IN_FLIGHT,
    LOOP_LAG,
    METHOD_INDEX,
    METHODS,
    RATE_LIMITED,
    REQUESTS,
    SAMPLED_AT,
    SHED,
    STATUS_CLASSES,
    WS_ENDED,
    WS_OPEN,
    Board,
)
from bastion.protocol.types import Exchange

SAMPLE_EVERY = 1.0  # seconds
# status // 100 -> status class index (1xx..5xx; anything else counts as 5xx)
_CLASS = (4, 0, 1, 2, 3, 4, 4, 4, 4, 4)

RouteOf = Callable[[Exchange], int]


class Recorder(AccessLog):
    """The per-response hook: counts, then passes the call on to ``inner``.

    Per-response counts go into plain lists of this process (the cheapest increments
    Python has) and are copied into the board's slot once a second and when the worker
    stops; a worker that crashes loses at most its last second of counts.
    """

    def __init__(
        self,
        board: Board,
        slot: int,
        inner: AccessLog | None,
        route_of: RouteOf | None = None,
    ) -> None:
        # (not AccessLog.__init__: there is no writer of our own)
        self._inner = inner
        self._route_of = route_of
        self._ints = board.ints
        self._floats = board.floats
        lay = board.layout
        self._base = board.base(slot)
        self._lay = lay
        self._nroutes = len(lay.routes)
        self._nb = lay.nbuckets
        self._per_route = len(METHODS) * len(STATUS_CLASSES)
        # cells lay.requests .. lay.hist_sum of the slot: requests, then histograms
        self._counts = [0] * (lay.hist_sum - lay.requests)
        self._hist = lay.hist - lay.requests
        self._sums = [0.0] * self._nroutes
        self._out = 0
        self._in = 0
        self._auth = 0
        self._limited = 0
        self._gc_start = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tracker: Any = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def __call__(self, exchange: Exchange, status: int, body_bytes: int, duration: float) -> None:
        counts = self._counts
        head = exchange.head
        cell = METHOD_INDEX.get(head.method, 7) * 5 + _CLASS[status // 100 % 10]
        hist = self._hist
        if self._route_of is None:
            counts[cell] += 1
            counts[hist + bisect_left(BUCKETS, duration)] += 1
            self._sums[0] += duration
        else:
            route = self._route_of(exchange)
            counts[route * self._per_route + cell] += 1
            counts[hist + route * self._nb + bisect_left(BUCKETS, duration)] += 1
            self._sums[route] += duration
        self._out += body_bytes
        received = exchange.received  # type: ignore[attr-defined]
        if received:
            self._in += received
        if status >= 400:
            if status == 401:
                self._auth += 1
            elif status == 429:
                self._limited += 1
        inner = self._inner
        if inner is not None:
            inner(exchange, status, body_bytes, duration)

    def flush(self) -> None:
        """Copy this process's counts into its slot of the board."""
        ints, base, lay = self._ints, self._base, self._lay
        counts = self._counts
        # the sums before the counts: a reader that sees a count sees its time too
        self._floats[base + lay.hist_sum : base + lay.cells] = memoryview(array("d", self._sums))
        ints[base + lay.requests : base + lay.hist_sum] = memoryview(array("q", counts))
        ints[base + REQUESTS] = sum(counts[: self._hist])
        ints[base + BYTES_OUT] = self._out
        ints[base + BYTES_IN] = self._in
        ints[base + AUTH_REJECTED] = self._auth
        ints[base + RATE_LIMITED] = self._limited

    def session(self, exchange: Exchange, session: object, duration: float) -> None:
        self._ints[self._base + WS_ENDED] += 1
        if self._inner is not None:
            self._inner.session(exchange, session, duration)

    def reopen(self) -> None:
        """Reopen the access log's file (SIGUSR1 on the supervisor: log rotation)."""
        inner = self._inner
        if inner is not None and hasattr(inner, "reopen"):
            inner.reopen()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self.flush()
        try:
            gc.callbacks.remove(self._on_gc)
        except ValueError:
            pass
        if self._inner is not None:
            self._inner.close()

    # -- sampled values ----------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, tracker: Any) -> None:
        """Time garbage collections and sample the worker once a second from now on."""
        self._loop = loop
        self._tracker = tracker
        gc.callbacks.append(self._on_gc)
        self._due = loop.time()
        self._sample()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
            return
        gen = info["generation"]
        base = self._base
        self._ints[base + GC_COLLECTIONS + gen] += 1
        self._ints[base + GC_COLLECTED + gen] += info["collected"]
        self._floats[base + GC_PAUSE + gen] += time.perf_counter() - self._gc_start

    def _sample(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        ints, base = self._ints, self._base
        self._floats[base + LOOP_LAG] = max(0.0, now - self._due)
        tracker = self._tracker
        connections = tracker.connections
        busy = upgraded = 0
        for conn in connections:
            phase = conn.phase
            if phase == "BUSY":
                busy += 1
            elif phase == "UPGRADED":
                upgraded += 1
        ints[base + CONNECTIONS] = len(connections)
        ints[base + IN_FLIGHT] = busy
        ints[base + WS_OPEN] = upgraded
        ints[base + EVICTED] = tracker.evicted
        ints[base + SHED] = tracker.shed
        self._floats[base + SAMPLED_AT] = time.monotonic()
        self.flush()
        self._due = now + SAMPLE_EVERY
        self._handle = loop.call_at(self._due, self._sample)


def router_index(site: Any, last: int) -> RouteOf | None:
    """A function giving the board's index of the route that answers an exchange, or
    None for a site without routes. ``last`` is the board's last route label
    ("unmatched"): the labels are fixed when bastion starts, so when a reload changed
    the routes, requests are counted there (with a warning) until a restart."""
    router = getattr(site, "router", None)
    if router is None or last <= 0:
        return None
    routes = len(getattr(site, "pipelines", ()))
    if routes != last:
        from bastion.observe.logging import logger

        logger.warning(
            "the routes changed since bastion started: requests are counted as "
            'route="unmatched" in the metrics until a restart'
        )
        return lambda exchange: last
    from bastion.edge.router import routing_path

    find = router.find
    host_of = router.host_of

    def route_of(exchange: Exchange) -> int:
        head = exchange.head
        path = head.normalized_path
        if path.find("%2F") >= 0:
            path = routing_path(path)
        found = find(head.method, host_of(exchange), path, head.headers)
        return last if found is None else found[1].route_index

    return route_of
