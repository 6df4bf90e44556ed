"""One upstream server as a worker sees it: its pool of idle connections, what it has in
flight, its latency estimate and its passive health.

The counters here (requests, failures, in flight, latency, ejections) are what the
metrics export will read; they are plain attributes, updated on the event loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from bastion.observe.board import BUCKETS as _BOARD_BUCKETS
from bastion.upstream.address import ServerSpec

if TYPE_CHECKING:
    from bastion.upstream.connection import UpstreamConnection

__all__ = ["Server"]

#: the latency histogram's bucket bounds, seconds (a static in the compiled build)
_BUCKETS: Final[tuple[float, ...]] = tuple(_BOARD_BUCKETS)
_NBUCKETS: Final = len(_BOARD_BUCKETS)

#: how long the peak-EWMA latency takes to forget (seconds): Finagle's default decay 10 s
DECAY: Final = 10.0
#: a new server's latency guess (seconds), so it is tried but not flooded
INITIAL_LATENCY: Final = 0.001
#: latencies below this (seconds) count as this when servers are compared: among servers
#: that all answer within it, the requests in flight decide. A millisecond or two more on
#: one answer (a cold worker's first, a new connection's) is noise, not a reason to leave
#: a server out for the seconds its figure takes to decay
LATENCY_FLOOR: Final = 0.005
#: the ejection time grows with each ejection in a row, up to this many times the first
MAX_EJECTION_FACTOR: Final = 10


class Server:
    """A member of an upstream group."""

    __slots__ = (
        "authority",
        "check_fails",
        "check_passes",
        "consecutive_failures",
        "current_weight",
        "draining",
        "ejected_until",
        "ejections",
        "ejections_total",
        "failures",
        "healthy",
        "idle",
        "in_flight",
        "label",
        "latency",
        "latency_at",
        "latency_counts",
        "latency_total",
        "max_conns",
        "open_connections",
        "peak_in_flight",
        "requests",
        "spec",
        "token",
        "weight",
    )

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        # the spec's fields read on every request, as native attributes
        self.label = spec.label  # how logs and error bodies name it
        self.authority = spec.authority  # the Host of a request that came without one
        self.weight = spec.weight
        self.max_conns = spec.max_conns  # 0 = no limit
        #: idle keep-alive connections, most recently used last
        self.idle: list[UpstreamConnection] = []
        self.open_connections = 0
        self.in_flight = 0
        self.peak_in_flight = 0  # the most in flight at once since the last sweep
        self.requests = 0  # tries sent to it
        #: response-head latencies counted in the metrics' buckets (the last: above them)
        #: and their sum, seconds
        self.latency_counts = [0] * (_NBUCKETS + 1)
        self.latency_total = 0.0
        self.failures = 0  # connect errors, 5xx, bad responses, timeouts
        self.consecutive_failures = 0
        self.ejections = 0  # ejections in a row (reset by a success)
        self.ejected_until = 0.0
        self.ejections_total = 0  # every ejection since the worker started
        #: the active health checks' verdict (True until checks say otherwise) and the
        #: passes or failures in a row that lead to the next change
        self.healthy = True
        self.check_passes = 0
        self.check_fails = 0
        #: its address left the name's resolution: no new requests, idle ones closed
        self.draining = False
        #: what the sticky cookie holds for it (set by the group)
        self.token = b""
        #: peak-EWMA latency in seconds and when it was last updated
        self.latency = INITIAL_LATENCY
        self.latency_at = 0.0
        #: smooth weighted round robin's running weight
        self.current_weight = 0

    def available(self, now: float) -> bool:
        """Healthy, not ejected and below its connection cap."""
        if self.ejected_until > now or not self.healthy:
            return False
        cap = self.max_conns
        return cap == 0 or self.in_flight < cap

    def cost(self, now: float) -> float:
        """Peak-EWMA load: the decayed latency (at least :data:`LATENCY_FLOOR`) times the
        requests waiting (plus one). A server never measured yet costs nothing while it
        has no request: it is tried at once, then weighed by its guess
        (:data:`INITIAL_LATENCY`) until its first answer."""
        if self.latency_at == 0.0 and self.in_flight == 0:
            return 0.0
        latency = self.decayed_latency(now)
        if latency < LATENCY_FLOOR:
            latency = LATENCY_FLOOR  # below it, servers are as fast as each other
        return latency * (self.in_flight + 1)

    def decayed_latency(self, now: float) -> float:
        """The latency figure, decayed towards zero since it was last updated: a server
        that was slow and is no longer chosen looks cheaper as time passes, so it is
        tried again and its figure brought up to date (a server still slow is measured
        slow again at once). Never measured: the guess."""
        if self.latency_at == 0.0:
            return self.latency
        elapsed = now - self.latency_at
        if elapsed <= 0:
            return self.latency
        return self.latency * math.exp(-elapsed / DECAY)

    def observe_latency(self, seconds: float, now: float) -> None:
        """A response head arrived ``seconds`` after the request was sent: a higher
        figure takes over at once (the peak), a lower one is blended in by how long ago
        the figure was last updated; the figure is also counted in the latency
        histogram."""
        b = 0
        while b < _NBUCKETS and seconds > _BUCKETS[b]:
            b += 1
        self.latency_counts[b] += 1
        self.latency_total += seconds
        if self.latency_at == 0.0 or seconds > self.latency:
            self.latency = seconds  # the first figure, or a peak
        else:
            elapsed = now - self.latency_at
            w = math.exp(-elapsed / DECAY) if elapsed > 0 else 1.0
            self.latency = self.latency * w + seconds * (1 - w)
        self.latency_at = now

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self.ejections = 0

    def failed(self) -> None:
        self.failures += 1
        self.consecutive_failures += 1

    def eject(self, now: float, base: float) -> None:
        """Take it out of rotation for a time that grows with each ejection in a row."""
        self.ejections += 1
        self.ejections_total += 1
        self.ejected_until = now + base * min(self.ejections, MAX_EJECTION_FACTOR)
        self.consecutive_failures = 0

    def stats(self, now: float) -> dict[str, object]:
        """The counters the operations side reads (see ``Upstream.stats``)."""
        if not self.healthy:
            state = "unhealthy"
        elif self.ejected_until > now:
            state = "ejected"
        elif self.draining:
            state = "draining"
        else:
            state = "up"
        return {
            "server": self.spec.label,
            "state": state,
            "requests": self.requests,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "latency_ewma": self.decayed_latency(now),
            "ejections": self.ejections_total,
            "idle_connections": len(self.idle),
        }

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()

    def __repr__(self) -> str:
        return f"<Server {self.spec.label} in_flight={self.in_flight}>"
