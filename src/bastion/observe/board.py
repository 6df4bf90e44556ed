"""The metrics board: one shared memory map that workers count in and the admin reads.

The supervisor maps it (anonymous, shared) before the first fork, so every worker and
the admin process see the same pages. It holds:

* a header the supervisor writes: its own heartbeat, readiness, draining, restarts by
  cause, and a sequence number that is odd while it folds a dead worker's counters;
* the counters of workers that have exited ("retired"), so totals never go backwards;
* one slot per worker, with the same index as its heartbeat slot. The supervisor writes
  its state, pid and start time; the worker alone writes every counter in it, with
  plain stores into its own memory (no lock, no system call, no message per request).

Every cell is 8 bytes, aligned: an int64 counter or a float64. A reader may see a slot
mid-update (one counter bumped, the next not yet); the admin therefore derives each
histogram's count from its buckets, so a histogram is always consistent with itself.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Sequence

from bastion.config.schema import Config

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
METHOD_INDEX = {m: i for i, m in enumerate(METHODS[:-1])}
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# seconds; Prometheus client defaults, extended down for a server that answers in 100 us
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
GENERATIONS = 3
RESTART_CAUSES = ("crash", "timeout", "max_requests", "reload", "max_memory", "startup")

# worker slot states, written by the supervisor
FREE, STARTING, READY, RETIRING = 0, 1, 2, 3
STATE_NAMES = ("free", "starting", "ready", "retiring")

# -- scalar cells at the start of each slot (index into the int64/float64 views) -------
STATE = 0
PID = 1
STARTED = 2  # float: wall-clock time of the fork
GENERATION = 3
REQUESTS = 4
BYTES_OUT = 5
BYTES_IN = 6
CONNECTIONS = 7  # sampled each second
IN_FLIGHT = 8  # sampled: connections answering a request
EVICTED = 9  # sampled from the connection tracker
SHED = 10
WS_ENDED = 11  # upgraded sessions (WebSockets) that ended
WS_OPEN = 12  # sampled
LOOP_LAG = 13  # float: the last event-loop lag measured, seconds
AUTH_REJECTED = 14  # 401 answers
RATE_LIMITED = 15  # 429 answers
TLS_CONNECTIONS = 16  # connections on TLS listeners that completed the handshake
GC_COLLECTIONS = 17  # 3 cells: per generation
GC_COLLECTED = 20  # 3 cells
GC_PAUSE = 23  # 3 float cells: seconds
SAMPLED_AT = 26  # float: monotonic time of the worker's last sample
SCALARS = 32

# header cells
H_BEAT = 0  # float: the supervisor's last loop turn (monotonic)
H_READY = 1
H_DRAINING = 2
H_SEQ = 3  # odd while the supervisor folds an exited worker into the retired counters
H_STARTED = 4  # float: wall-clock start of the supervisor
H_RESTARTS = 8  # one cell per RESTART_CAUSES
HEADER = 32

# counters that add up across workers (folded into "retired" when a worker exits)
ADDITIVE = (
    REQUESTS,
    BYTES_OUT,
    BYTES_IN,
    EVICTED,
    SHED,
    WS_ENDED,
    AUTH_REJECTED,
    RATE_LIMITED,
    TLS_CONNECTIONS,
    *range(GC_COLLECTIONS, GC_COLLECTIONS + 2 * GENERATIONS),
)


def route_labels(config: Config) -> list[str]:
    """The ``route`` label of each route, in order, then the one for requests that
    matched none. Without routes there is one: the app."""
    if not config.routes:
        return ["app"]
    labels = [f"{r.host}{r.path}" if r.host else r.path for r in config.routes]
    return [*labels, "unmatched"]


class Layout:
    """Where each counter of a slot lives."""

    def __init__(self, routes: Sequence[str]) -> None:
        self.routes = tuple(routes)
        n = len(self.routes)
        self.requests = SCALARS  # [route][method][status class]
        self.hist = self.requests + n * len(METHODS) * len(STATUS_CLASSES)
        self.nbuckets = len(BUCKETS) + 1  # the last one is +Inf
        self.hist_sum = self.hist + n * self.nbuckets  # float per route
        self.cells = self.hist_sum + n

    def request_cell(self, route: int, method: int, status_class: int) -> int:
        return self.requests + (route * len(METHODS) + method) * len(STATUS_CLASSES) + status_class


class Board:
    """The shared map. ``ints`` and ``floats`` are views of the same bytes."""

    def __init__(self, routes: Sequence[str], slots: int) -> None:
        self.layout = Layout(routes)
        self.slots = slots
        self.slot_cells = self.layout.cells
        cells = HEADER + self.slot_cells * (slots + 1)  # + the retired counters
        self._map = mmap.mmap(-1, cells * 8, flags=mmap.MAP_SHARED)
        view = memoryview(self._map)
        self.ints = view.cast("q")
        self.floats = view.cast("d")
        self.floats[H_STARTED] = time.time()

    def base(self, slot: int) -> int:
        """The first cell of worker ``slot`` (-1: the retired counters)."""
        return HEADER + self.slot_cells * (slot + 1)

    # -- supervisor side ---------------------------------------------------------------
    def beat(self) -> None:
        self.floats[H_BEAT] = time.monotonic()

    def set_ready(self, ready: bool) -> None:
        self.ints[H_READY] = int(ready)

    def set_draining(self) -> None:
        self.ints[H_DRAINING] = 1

    def count_restart(self, cause: str) -> None:
        self.ints[H_RESTARTS + RESTART_CAUSES.index(cause)] += 1

    def reset(self, slot: int) -> None:
        """Zero a slot before its worker is forked."""
        b = self.base(slot)
        self.ints[b : b + self.slot_cells] = memoryview(bytes(self.slot_cells * 8)).cast("q")

    def started(self, slot: int, pid: int, generation: int) -> None:
        b = self.base(slot)
        self.ints[b + PID] = pid
        self.ints[b + GENERATION] = generation
        self.floats[b + STARTED] = time.time()
        self.ints[b + STATE] = STARTING

    def set_state(self, slot: int, state: int) -> None:
        self.ints[self.base(slot) + STATE] = state

    def exited(self, slot: int) -> None:
        """Fold an exited worker's counters into the retired ones and free its slot."""
        ints, floats = self.ints, self.floats
        b, r = self.base(slot), self.base(-1)
        lay = self.layout
        ints[H_SEQ] += 1
        try:
            for cell in ADDITIVE:
                ints[r + cell] += ints[b + cell]
            for g in range(GENERATIONS):
                floats[r + GC_PAUSE + g] += floats[b + GC_PAUSE + g]
            for cell in range(lay.requests, lay.hist_sum):
                ints[r + cell] += ints[b + cell]
            for cell in range(lay.hist_sum, lay.cells):
                floats[r + cell] += floats[b + cell]
            ints[b + STATE] = FREE
        finally:
            ints[H_SEQ] += 1

    def close(self) -> None:
        self.ints.release()
        self.floats.release()
        self._map.close()
