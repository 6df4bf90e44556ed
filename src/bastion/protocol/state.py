"""Per-worker connection bookkeeping shared by every connection of one worker.

The tracker keeps the set of open connections (for limits and graceful shutdown), counts
finished responses (for ``max_requests``), and runs one periodic tick that refreshes the
cached ``Date`` header and enforces every connection's timeouts. One timer for the whole
worker costs far less than a timer per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Final, Protocol

log: Final = logging.getLogger("bastion.error")

TICK_SECONDS: Final = 0.5
#: a connection must have kept bastion waiting this long (seconds) to be evicted for a
#: new one
EVICT_MIN_WAIT: Final = 1.0
#: ... except one that has sent nothing since it was accepted: its request would have
#: come by now (a request follows the handshake within a round trip)
EVICT_FRESH_WAIT: Final = 0.25
#: bytes a second: a transfer in progress is credited a second of waiting for each of
#: these it moved, so that a fast download or upload is never taken for a stalled one
EVICT_CREDIT_RATE: Final = 64 * 1024
#: when connections run out, up to this share of them is evicted at once, so that a burst
#: of new clients does not scan every connection for each one
EVICT_BATCH_SHARE: Final = 16
_INF: Final = float("inf")


class TrackedConnection(Protocol):
    """What the tracker needs from a connection."""

    def check_deadline(self, now: float) -> None:
        """Close or time out the connection if its current deadline has passed."""

    def shutdown(self) -> None:
        """Close now if idle, else close after the response in progress."""

    def abort(self) -> None:
        """Close at once, dropping whatever is in flight."""

    def waiting(self, now: float) -> float:
        """Seconds the connection has kept bastion waiting on its client (for a request,
        a head, a body or a slow read), or -1 when it may not be evicted."""
        ...

    def evict(self) -> None:
        """Close to make room for a new client (it kept bastion waiting)."""

    @property
    def is_idle(self) -> bool:
        """True when no request is in progress on the connection."""
        ...


def _waited(item: tuple[float, TrackedConnection]) -> float:
    return item[0]


def _since(item: tuple[float, int, TrackedConnection]) -> float:
    return item[0]


def _date_header(now: float) -> bytes:
    return b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"


class ConnectionTracker:
    """Connections of one worker, their timeouts, and the cached Date header."""

    __slots__ = (
        "_bucket0",
        "_buckets",
        "_closed_waiter",
        "_loop",
        "_method_index",
        "_no_room_at",
        "_per_route",
        "_route_fixed",
        "_routes",
        "_run_cell",
        "_run_hi",
        "_run_hist",
        "_run_lo",
        "_run_m",
        "_run_method",
        "_run_n",
        "_run_route",
        "_run_route_arg",
        "_run_status",
        "_run_sum",
        "_slow_writers",
        "_tick_handle",
        "auth_rejected",
        "bytes_in",
        "bytes_out",
        "connections",
        "counting",
        "counts",
        "date_header",
        "draining",
        "evicted",
        "latency_sums",
        "max_pending_output",
        "now",
        "on_request",
        "pending_output",
        "per_client",
        "rate_limited",
        "ready",
        "ready_scheduled",
        "refused_per_client",
        "requests_served",
        "servers",
        "sessions_ended",
        "shed",
        "tls_handshakes",
    )

    def __init__(self) -> None:
        self.connections: set[TrackedConnection] = set()
        self.requests_served = 0
        #: the (host, port) of each listening address, shared by its connections
        self.servers: dict[object, tuple[str, int | None] | None] = {}
        # called after each finished response (the worker uses it for max_requests)
        self.on_request: Callable[[], None] | None = None
        self.draining = False
        #: connections with requests to answer on the loop's next turn, answered in one
        #: callback (protocol/http1.py), and whether that callback is scheduled
        self.ready: list[object] = []
        self.ready_scheduled = False
        self.now = time.monotonic()
        self.date_header = _date_header(time.time())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        #: response bytes waiting for slow clients at the last tick, and the budget
        self.pending_output = 0
        self.max_pending_output = 1 << 62
        self._slow_writers: list[tuple[float, int, TrackedConnection]] = []
        self._no_room_at = -1.0  # the tick at which no connection could be evicted
        #: connections evicted for new ones, and dropped to keep pending output bounded
        self.evicted = 0
        self.shed = 0
        #: open connections by client address (for limits.max_connections_per_client)
        self.per_client: dict[str, int] = {}
        # -- metrics (see enable_counting): plain fields and fixed-size lists that the
        # compiled protocol increments; the worker's recorder copies them once a second
        self.counting = False
        self.counts: list[int] = []
        self.latency_sums: list[float] = []
        self.bytes_out = 0
        self.bytes_in = 0
        self.auth_rejected = 0
        self.rate_limited = 0
        self.sessions_ended = 0
        self.tls_handshakes = 0
        #: connections refused by limits.max_connections_per_client (since start)
        self.refused_per_client = 0
        self._routes = 1
        self._route_fixed = -1
        self._per_route = 0
        self._method_index: dict[str, int] = {}
        self._buckets: tuple[float, ...] = ()
        # the run: responses counted since the last fold, all in the same cells (see
        # count); the last one's method (and its index), route and status as given, and
        # the bounds of its latency bucket
        self._run_cell = -1
        self._run_hist = -1
        self._run_route = 0
        self._run_n = 0
        self._run_sum = 0.0
        self._run_method = ""
        self._run_m = -1
        self._run_route_arg = -1
        self._run_status = -1
        self._run_lo = 0.0
        self._run_hi = -1.0

    # -- connections -----------------------------------------------------------------
    def add(self, conn: TrackedConnection) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._tick()
        self.connections.add(conn)

    def remove(self, conn: TrackedConnection) -> None:
        self.connections.discard(conn)
        waiter = self._closed_waiter
        if not self.connections and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def request_done(self) -> None:
        self.requests_served += 1
        if self.on_request is not None:
            self.on_request()

    # -- metrics -----------------------------------------------------------------------
    def enable_counting(
        self,
        routes: int,
        method_index: dict[str, int],
        methods: int,
        buckets: tuple[float, ...],
        route_fixed: int = -1,
    ) -> None:
        """Count every finished response from now on, by route, method and status class,
        and its duration into a histogram of ``buckets`` (upper bounds, seconds; one more
        bucket for +Inf).

        :attr:`counts` is laid out as ``[route][method][status class 1xx..5xx]`` then
        ``[route][bucket]``; :attr:`latency_sums` has one sum per route. A method not in
        ``method_index`` counts as ``methods - 1``; a route index outside ``routes``
        (no route matched) as the last one; ``route_fixed`` >= 0 counts every request
        there (the routes changed since the layout was made). Both hold the counts up
        to the last :meth:`fold`: call it before reading them.
        """
        self._routes = routes
        self._route_fixed = route_fixed
        self._method_index = method_index
        self._buckets = buckets
        self._per_route = methods * 5
        nb = len(buckets) + 1
        self.counts = [0] * (routes * (methods * 5 + nb))
        self.latency_sums = [0.0] * routes
        self._run_cell = self._run_hist = -1
        self._run_route = self._run_n = 0
        self._run_sum = 0.0
        self._run_method = ""
        self._run_m = -1
        self._run_route_arg = self._run_status = -1
        self._run_lo, self._run_hi = 0.0, -1.0  # no duration falls there
        self.counting = True

    def count(
        self, method: str, route: int, status: int, sent: int, received: int, duration: float
    ) -> None:
        """Count one finished response (called by the connection; compiled).

        Consecutive responses that fall in the same cells (route, method, status class
        and latency bucket: nearly all of them under a steady load) make a run, kept in
        native fields of the tracker: a response like the last one (same method, route
        and status, a duration in the same bucket) costs a few comparisons and two
        additions, and allocates nothing. The run goes into :attr:`counts` and
        :attr:`latency_sums` when a response falls elsewhere, or at :meth:`fold`.
        """
        if (
            method is self._run_method  # the method texts are made once (h1_reader)
            and route == self._run_route_arg
            and status == self._run_status
            and duration > self._run_lo
            and duration <= self._run_hi
        ):
            self._run_n += 1
            self._run_sum += duration
        else:
            self._count_new(method, route, status, duration)
        self.bytes_out += sent
        self.bytes_in += received
        if status == 401:
            self.auth_rejected += 1
        elif status == 429:
            self.rate_limited += 1

    def _count_new(self, method: str, route: int, status: int, duration: float) -> None:
        """Count a response unlike the last one: find its cells, and start a new run
        there unless they are the run's."""
        self._run_route_arg = route
        self._run_status = status
        routes = self._routes
        if self._route_fixed >= 0:
            route = self._route_fixed
        elif route < 0 or route >= routes:
            route = routes - 1
        cls = status // 100 - 1
        if cls < 0 or cls > 4:
            cls = 4
        per_route = self._per_route
        if method is self._run_method:
            m = self._run_m
        else:
            m = self._method_index.get(method, -1)
            if m < 0:
                m = per_route // 5 - 1
            self._run_method = method
            self._run_m = m
        cell = route * per_route + m * 5 + cls
        buckets = self._buckets
        nb = len(buckets)
        b = 0
        while b < nb and duration > buckets[b]:
            b += 1
        # the bucket's bounds: (the one below, its own]
        self._run_lo = buckets[b - 1] if b > 0 else -_INF
        self._run_hi = buckets[b] if b < nb else _INF
        hist = routes * per_route + route * (nb + 1) + b
        if cell == self._run_cell and hist == self._run_hist:
            self._run_n += 1
            self._run_sum += duration
            return
        self.fold()
        self._run_cell = cell
        self._run_hist = hist
        self._run_route = route
        self._run_n = 1
        self._run_sum = duration

    def fold(self) -> None:
        """Add the responses of the current run (see :meth:`count`) to :attr:`counts`
        and :attr:`latency_sums`."""
        n = self._run_n
        if n == 0:
            return
        counts = self.counts
        counts[self._run_cell] += n
        counts[self._run_hist] += n
        self.latency_sums[self._run_route] += self._run_sum
        self._run_n = 0
        self._run_sum = 0.0

    def reclaim(self) -> bool:
        """Make room for a new connection by evicting those that kept bastion waiting the
        longest (see :meth:`TrackedConnection.waiting`); False if none may be evicted.

        A batch goes at once (up to a 1/:data:`EVICT_BATCH_SHARE` of all, the longest
        waiting first), so a burst of new clients costs one scan.
        """
        loop = self._loop
        now = loop.time() if loop is not None else time.monotonic()
        if now - self._no_room_at < 0.05:
            return False  # nothing was evictable a moment ago; it is still so
        found: list[tuple[float, TrackedConnection]] = []
        for conn in self.connections:
            waited = conn.waiting(now)
            if waited >= 0.0:
                found.append((waited, conn))
        if not found:
            self._no_room_at = now
            return False
        found.sort(key=_waited, reverse=True)
        batch = max(1, len(self.connections) // EVICT_BATCH_SHARE)
        for i, (_, conn) in enumerate(found):
            if i >= batch:
                break
            conn.evict()
            self.evicted += 1
        return True

    def waiting_to_send(self, conn: TrackedConnection, since: float, unsent: int) -> None:
        """Called during the tick by a connection whose client is slow to read."""
        self.pending_output += unsent
        self._slow_writers.append((since, unsent, conn))

    def _shed_output(self) -> None:
        """Drop the clients that have been slow to read the longest until what waits for
        slow clients fits the budget again."""
        slow = sorted(self._slow_writers, key=_since)
        excess = self.pending_output - self.max_pending_output
        dropped = 0
        for _, unsent, conn in slow:
            if excess <= 0:
                break
            conn.abort()
            dropped += 1
            excess -= unsent
        self.shed += dropped
        log.warning(
            "%d bytes of responses waited for slow clients (limits.max_pending_output is "
            "%d): dropped the %d slowest",
            self.pending_output,
            self.max_pending_output,
            dropped,
        )

    # -- the tick ----------------------------------------------------------------------
    def _tick(self) -> None:
        self.now = time.monotonic()
        self.date_header = _date_header(time.time())
        self.pending_output = 0
        self._slow_writers.clear()
        for conn in list(self.connections):
            conn.check_deadline(self.now)
        if self.pending_output > self.max_pending_output:
            self._shed_output()
        self._slow_writers.clear()
        assert self._loop is not None
        self._tick_handle = self._loop.call_later(TICK_SECONDS, self._tick)

    # -- shutdown ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop taking requests: idle connections close now, busy ones after responding."""
        self.draining = True
        for conn in list(self.connections):
            conn.shutdown()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until every connection has closed; False if ``timeout`` ran out first."""
        if not self.connections:
            return True
        loop = asyncio.get_running_loop()
        self._closed_waiter = loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed_waiter), timeout)
        except TimeoutError:
            return not self.connections
        return True

    def abort_all(self) -> None:
        """Drop every remaining connection and stop the tick."""
        for conn in list(self.connections):
            conn.abort()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
