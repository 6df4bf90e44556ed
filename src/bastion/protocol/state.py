"""Per-worker connection bookkeeping shared by every connection of one worker.

The tracker keeps the set of open connections (for limits and graceful shutdown), counts
finished responses (for ``max_requests``), and runs one periodic tick that refreshes the
cached ``Date`` header and enforces every connection's timeouts. One timer for the whole
worker costs far less than a timer per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Protocol

TICK_SECONDS = 0.5


class TrackedConnection(Protocol):
    """What the tracker needs from a connection."""

    def check_deadline(self, now: float) -> None:
        """Close or time out the connection if its current deadline has passed."""

    def shutdown(self) -> None:
        """Close now if idle, else close after the response in progress."""

    def abort(self) -> None:
        """Close at once, dropping whatever is in flight."""

    @property
    def is_idle(self) -> bool:
        """True when no request is in progress on the connection."""
        ...


def _date_header(now: float) -> bytes:
    return b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"


class ConnectionTracker:
    """Connections of one worker, their timeouts, and the cached Date header."""

    __slots__ = (
        "_closed_waiter",
        "_loop",
        "_tick_handle",
        "connections",
        "date_header",
        "draining",
        "now",
        "on_request",
        "requests_served",
        "servers",
    )

    def __init__(self) -> None:
        self.connections: set[TrackedConnection] = set()
        self.requests_served = 0
        #: the (host, port) of each listening address, shared by its connections
        self.servers: dict[object, tuple[str, int | None] | None] = {}
        # called after each finished response (the worker uses it for max_requests)
        self.on_request: Callable[[], None] | None = None
        self.draining = False
        self.now = time.monotonic()
        self.date_header = _date_header(time.time())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._closed_waiter: asyncio.Future[None] | None = None

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

    def reclaim_idle(self) -> bool:
        """Close one idle keep-alive connection to make room; False if none is idle."""
        for conn in self.connections:
            if conn.is_idle:
                conn.abort()
                return True
        return False

    # -- the tick ----------------------------------------------------------------------
    def _tick(self) -> None:
        self.now = time.monotonic()
        self.date_header = _date_header(time.time())
        for conn in list(self.connections):
            conn.check_deadline(self.now)
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
