"""The metrics board: one shared memory map that workers count in and the admin reads.

The supervisor maps it (anonymous, shared) before the first fork, so every worker and
the admin process see the same pages. It holds:

* a header the supervisor writes: its own heartbeat, readiness, draining, restarts by
  cause, and a sequence number that is odd while it folds a dead worker's counters;
* the counters of workers that have exited ("retired"), so totals never go backwards;
* one slot per worker, with the same index as its heartbeat slot. The supervisor writes
  its state, pid and start time; the worker alone writes every counter in it, with
  plain stores into its own memory (no lock, no system call, no message per request).

Each slot (and the retired counters) ends with a table of :data:`UPSTREAM_SERVERS`
upstream-server entries, each named by its ``upstream`` and ``server`` labels (the
name's bytes are in the entry, since servers are only known once the worker has
resolved them). A worker fills its table in the order it meets servers; when all but
the last entry are taken, further servers are summed into the last one, labelled
``upstream="other", server="other"``. When a worker exits, the supervisor adds its
entries' counters to the retired entry of the same name (allocated the same way), so a
server's counters never go backwards across reloads and worker restarts.

The ``route`` labels live in a table after the header, with room for
:data:`ROUTE_SPARE` more than the routes bastion started with: a reload that adds
routes has the supervisor name them in free entries before it forks the new workers,
so their requests get labels of their own; a route that stays keeps its entry (and its
counts). Beyond the room, new routes count under ``route="other"``. Each worker maps
its own route indices to the table's when it copies its counts.

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
CPU_SECONDS = 27  # float: the worker's CPU time (user + system, all threads) at its last sample
# the worker's TLS handshake gate (protocol/handshake.py), sampled
TLS_IN_PROGRESS = 28  # handshakes in progress
TLS_WAITING = 29  # connections waiting for a slot (tls.max_handshakes)
TLS_REFUSED = 30  # connections closed because no slot came free in time
TLS_EVICTED = 31  # stalled handshakes cut to make room for a newcomer
TLS_FAILED = 32  # handshakes that failed, timed out or lost their client
SCALARS = 40

# -- upstream-server entries (cells from the start of an entry) --------------------------
UPSTREAM_SERVERS = 64  # entries per worker: the last one sums the overflow ("other")
U_NAME_LEN = 0  # bytes of the name; 0 = a free entry
U_REQUESTS = 1
U_FAILURES = 2
U_EJECTIONS = 3
U_IN_FLIGHT = 4  # sampled
U_IDLE = 5  # sampled: idle keep-alive connections
U_STATE = 6  # sampled: an index into UPSTREAM_STATES
U_LATENCY = 7  # float: peak-EWMA latency, seconds
U_NAME = 8  # the name: upstream, NUL, server (UTF-8), in U_NAME_CELLS cells
U_NAME_CELLS = 14
U_HIST = U_NAME + U_NAME_CELLS  # response-head latency: one cell per bucket, then +Inf
U_HIST_SUM = U_HIST + len(BUCKETS) + 1  # float: their sum, seconds
U_CELLS = U_HIST_SUM + 1
U_ADDITIVE = (U_REQUESTS, U_FAILURES, U_EJECTIONS, *range(U_HIST, U_HIST_SUM))
NAME_BYTES = U_NAME_CELLS * 8
UPSTREAM_STATES = ("gone", "up", "ejected", "unhealthy", "draining")
OTHER = b"other\x00other"

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
    TLS_REFUSED,
    TLS_EVICTED,
    TLS_FAILED,
    *range(GC_COLLECTIONS, GC_COLLECTIONS + 2 * GENERATIONS),
)


ROUTE_SPARE = 32  # route entries beyond the routes at start, for reloads that add some
ROUTE_NAME_CELLS = 16  # per route entry: the name's length, then its UTF-8 bytes
ROUTE_NAME_BYTES = (ROUTE_NAME_CELLS - 1) * 8
OTHER_ROUTE = "other"


def route_labels(config: Config) -> list[str]:
    """The ``route`` label of each route, in order, then the one for requests that
    matched none. Without routes there is one: the app."""
    if not config.routes:
        return ["app"]
    labels = [f"{r.host}{r.path}" if r.host else r.path for r in config.routes]
    return [*labels, "unmatched"]


class Layout:
    """Where each counter of a slot lives."""

    def __init__(self, routes: Sequence[str], spare: int = 0) -> None:
        #: the labels the board was made with (its entries can name more later)
        self.routes = tuple(routes)
        #: route entries in each slot: the routes, the spare ones, and "other"
        self.capacity = n = len(self.routes) + (spare + 1 if spare else 0)
        self.requests = SCALARS  # [route][method][status class]
        self.hist = self.requests + n * len(METHODS) * len(STATUS_CLASSES)
        self.nbuckets = len(BUCKETS) + 1  # the last one is +Inf
        self.hist_sum = self.hist + n * self.nbuckets  # float per route
        self.upstream = self.hist_sum + n  # UPSTREAM_SERVERS entries of U_CELLS
        self.cells = self.upstream + UPSTREAM_SERVERS * U_CELLS

    def request_cell(self, route: int, method: int, status_class: int) -> int:
        return self.requests + (route * len(METHODS) + method) * len(STATUS_CLASSES) + status_class

    def entry(self, index: int) -> int:
        """The first cell of upstream-server entry ``index`` within a slot."""
        return self.upstream + index * U_CELLS


def server_key(upstream: str, server: str) -> bytes:
    """An entry's name: the two labels, NUL-separated."""
    return f"{upstream}\x00{server}".encode()


def split_key(key: bytes) -> tuple[str, str]:
    upstream, _, server = key.decode(errors="replace").partition("\x00")
    return upstream, server


class Board:
    """The shared map. ``ints`` and ``floats`` are views of the same bytes."""

    def __init__(self, routes: Sequence[str], slots: int, spare: int = ROUTE_SPARE) -> None:
        self.layout = Layout(routes, spare)
        self.slots = slots
        self.slot_cells = self.layout.cells
        self._slots_at = HEADER + self.layout.capacity * ROUTE_NAME_CELLS
        cells = self._slots_at + self.slot_cells * (slots + 1)  # + the retired counters
        self._map = mmap.mmap(-1, cells * 8, flags=mmap.MAP_SHARED)
        view = memoryview(self._map)
        self.ints = view.cast("q")
        self.floats = view.cast("d")
        self.floats[H_STARTED] = time.time()
        if spare:
            self._set_route_name(self.layout.capacity - 1, OTHER_ROUTE)
        self.name_routes(routes)

    def base(self, slot: int) -> int:
        """The first cell of worker ``slot`` (-1: the retired counters)."""
        return self._slots_at + self.slot_cells * (slot + 1)

    # -- route labels ------------------------------------------------------------------
    def route_names(self) -> list[str]:
        """The label of each route entry ("" for a free one)."""
        names = []
        for index in range(self.layout.capacity):
            cell = HEADER + index * ROUTE_NAME_CELLS
            size = self.ints[cell]
            if not 0 < size <= ROUTE_NAME_BYTES:
                names.append("")
                continue
            start = (cell + 1) * 8
            names.append(bytes(self._map[start : start + size]).decode(errors="replace"))
        return names

    def name_routes(self, labels: Sequence[str]) -> None:
        """Give each of ``labels`` an entry (the supervisor, before it forks workers
        with these routes): the one named so already, else a free one."""
        names = self.route_names()
        free = [i for i, name in enumerate(names) if not name]
        for label in labels:
            label = _route_key(label)
            if label in names or not free:
                continue
            index = free.pop(0)
            self._set_route_name(index, label)
            names[index] = label

    def route_index(self, label: str) -> int:
        """The entry of route ``label``: its own, else "other" (the table was full when
        it was added). Read-only: a worker calls it when it starts."""
        names = self.route_names()
        label = _route_key(label)
        if label in names:
            return names.index(label)
        return self.layout.capacity - 1

    def _set_route_name(self, index: int, label: str) -> None:
        data = _route_key(label).encode()
        cell = HEADER + index * ROUTE_NAME_CELLS
        start = (cell + 1) * 8
        self._map[start : start + len(data)] = data
        self.ints[cell] = len(data)  # after the bytes: a reader sees it whole

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
            for cell in range(lay.hist_sum, lay.upstream):
                floats[r + cell] += floats[b + cell]
            for index in range(UPSTREAM_SERVERS):
                e = b + lay.entry(index)
                if not ints[e + U_NAME_LEN]:
                    continue
                into = r + lay.entry(self.claim(r, self.name(e)))
                for cell in U_ADDITIVE:
                    ints[into + cell] += ints[e + cell]
                floats[into + U_HIST_SUM] += floats[e + U_HIST_SUM]
            ints[b + STATE] = FREE
        finally:
            ints[H_SEQ] += 1

    # -- upstream-server entries -------------------------------------------------------
    def name(self, entry: int) -> bytes:
        """The name of the entry at cell ``entry`` (b"" for a free one)."""
        size = self.ints[entry + U_NAME_LEN]
        if not 0 < size <= NAME_BYTES:
            return b""
        start = (entry + U_NAME) * 8
        return bytes(self._map[start : start + size])

    def claim(self, base: int, key: bytes) -> int:
        """The index of the entry named ``key`` in the table of the slot at cell ``base``:
        the one already named so, else the first free one but the last, else the last
        (the overflow, named "other"). Scans the table: called once per server and
        worker, or when a worker exits; not per request."""
        lay = self.layout
        ints = self.ints
        if len(key) > NAME_BYTES:
            key = OTHER
        for index in range(UPSTREAM_SERVERS - 1):
            e = base + lay.entry(index)
            if not ints[e + U_NAME_LEN]:
                self._set_name(e, key)
                return index
            if self.name(e) == key:
                return index
        index = UPSTREAM_SERVERS - 1
        e = base + lay.entry(index)
        if not ints[e + U_NAME_LEN]:
            self._set_name(e, OTHER)
        return index

    def _set_name(self, entry: int, key: bytes) -> None:
        start = (entry + U_NAME) * 8
        self._map[start : start + len(key)] = key
        self.ints[entry + U_NAME_LEN] = len(key)  # after the bytes: a reader sees it whole

    def close(self) -> None:
        self.ints.release()
        self.floats.release()
        self._map.close()


def _route_key(label: str) -> str:
    """``label`` cut to what an entry holds (whole characters)."""
    data = label.encode()
    if len(data) <= ROUTE_NAME_BYTES:
        return label
    return data[:ROUTE_NAME_BYTES].decode(errors="ignore")
