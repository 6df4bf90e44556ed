"""A worker's side of the metrics: counting into its own slot of the board.

:class:`Recorder` copies the counts that the compiled protocol keeps in the worker's
connection tracker (by route, method, status class and latency bucket; bytes; TLS
handshakes; sessions) into the worker's slot once a second. :meth:`Recorder.start`
adds what is sampled rather than counted: once a second it writes the open
connections, the requests in progress, the tracker's evictions, the event loop's lag,
the TLS handshake gate's gauges and counters (:mod:`bastion.protocol.handshake`), and
the counters of every upstream server (:class:`UpstreamSampler`, reading what the
reverse proxy's groups keep in worker memory); and a ``gc.callbacks`` hook times every
collection.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

from bastion.observe.board import (
    AUTH_REJECTED,
    BUCKETS,
    BYTES_IN,
    BYTES_OUT,
    CONNECTIONS,
    CPU_SECONDS,
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
    TLS_CONNECTIONS,
    TLS_EVICTED,
    TLS_FAILED,
    TLS_IN_PROGRESS,
    TLS_REFUSED,
    TLS_WAITING,
    U_EJECTIONS,
    U_FAILURES,
    U_HIST,
    U_HIST_SUM,
    U_IDLE,
    U_IN_FLIGHT,
    U_LATENCY,
    U_REQUESTS,
    U_STATE,
    UPSTREAM_STATES,
    WS_ENDED,
    WS_OPEN,
    Board,
    server_key,
)

SAMPLE_EVERY = 1.0  # seconds


class Recorder:
    """Copies the connection tracker's counts into the worker's slot of the board.

    The compiled protocol counts every finished response into plain fields and
    fixed-size lists of the worker's :class:`~bastion.protocol.state.ConnectionTracker`
    (see :meth:`~bastion.protocol.state.ConnectionTracker.count`): no Python call per
    response. Once a second, and when the worker stops, the recorder copies them into
    the board; a worker that crashes loses at most its last second of counts.
    """

    def __init__(self, board: Board, slot: int, routes: Sequence[str] = ("app",)) -> None:
        self._ints = board.ints
        self._floats = board.floats
        lay = board.layout
        self._base = board.base(slot)
        self._lay = lay
        #: the board's route entry of each of this worker's routes (by label: the board's
        #: entries outlive a reload that changes the routes)
        self._entries = [board.route_index(label) for label in routes]
        self._gc_start = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tracker: Any = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.upstreams = UpstreamSampler(board, slot)

    def attach(self, tracker: Any) -> None:
        """Have ``tracker`` count every response from now on, laid out as the board's
        slot is."""
        self._tracker = tracker
        tracker.enable_counting(len(self._entries), METHOD_INDEX, len(METHODS), BUCKETS)

    def flush(self) -> None:
        """Copy the tracker's counts into this worker's slot of the board."""
        tracker = self._tracker
        if tracker is None:
            return
        ints, base, lay = self._ints, self._base, self._lay
        tracker.fold()  # the responses of the run in progress too
        counts = tracker.counts
        # laid out as the board's slot: this worker's routes moved to their entries
        per_route = len(METHODS) * len(STATUS_CLASSES)
        nb = lay.nbuckets
        mine = len(self._entries)
        requests = array("q", bytes(8 * (lay.hist_sum - lay.requests)))
        sums = array("d", bytes(8 * lay.capacity))
        hist = lay.hist - lay.requests
        for route, entry in enumerate(self._entries):
            to, at = entry * per_route, route * per_route
            for k in range(per_route):
                requests[to + k] += counts[at + k]
            to, at = hist + entry * nb, mine * per_route + route * nb
            for k in range(nb):
                requests[to + k] += counts[at + k]
            sums[entry] += tracker.latency_sums[route]
        # the sums before the counts: a reader that sees a count sees its time too
        self._floats[base + lay.hist_sum : base + lay.upstream] = memoryview(sums)
        ints[base + lay.requests : base + lay.hist_sum] = memoryview(requests)
        ints[base + REQUESTS] = sum(counts[: mine * per_route])
        ints[base + BYTES_OUT] = tracker.bytes_out
        ints[base + BYTES_IN] = tracker.bytes_in
        ints[base + AUTH_REJECTED] = tracker.auth_rejected
        ints[base + RATE_LIMITED] = tracker.rate_limited
        ints[base + WS_ENDED] = tracker.sessions_ended
        ints[base + TLS_CONNECTIONS] = tracker.tls_handshakes

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self.upstreams.sample()
        self._sample_handshakes()
        self.flush()
        try:
            gc.callbacks.remove(self._on_gc)
        except ValueError:
            pass

    # -- sampled values ----------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, tracker: Any) -> None:
        """Count with ``tracker``, time garbage collections and sample the worker once a
        second from now on."""
        self._loop = loop
        if self._tracker is not tracker:
            self.attach(tracker)
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

    def _sample_handshakes(self) -> None:
        """The TLS handshake gate's gauges and counters (a worker has one gate for all
        its TLS listeners, none without TLS): read from the gate, nothing added to a
        connection."""
        handshake = sys.modules.get("bastion.protocol.handshake")
        if handshake is None:
            return  # no TLS listener in this worker
        active = waiting = refused = evicted = failed = 0
        for gate in list(handshake.GATES):
            active += gate.active
            waiting += gate.waiting
            refused += gate.refused
            evicted += gate.evicted
            failed += gate.failed
        ints, base = self._ints, self._base
        ints[base + TLS_IN_PROGRESS] = active
        ints[base + TLS_WAITING] = waiting
        ints[base + TLS_REFUSED] = refused
        ints[base + TLS_EVICTED] = evicted
        ints[base + TLS_FAILED] = failed

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
        self._sample_handshakes()
        self.upstreams.sample()
        # the worker's own CPU time, to the microsecond: /proc's ticks (10 ms) read 0 for
        # a worker that has served a few requests
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._floats[base + CPU_SECONDS] = usage.ru_utime + usage.ru_stime
        self._floats[base + SAMPLED_AT] = time.monotonic()
        self.flush()
        self._due = now + SAMPLE_EVERY
        self._handle = loop.call_at(self._due, self._sample)


_STATE_CODE = {name: i for i, name in enumerate(UPSTREAM_STATES)}


#: the cells of an upstream-server entry that add up, in the order the sampler counts them
_ADDED = (U_REQUESTS, U_FAILURES, U_EJECTIONS, *range(U_HIST, U_HIST_SUM))


class UpstreamSampler:
    """Copies the reverse proxy's per-server counters into the worker's entries.

    The upstream groups count in their own :class:`~bastion.upstream.server.Server`
    objects on the request path; this reads them once a second (nothing is added to a
    request). A server that leaves its group (a name re-resolved to other addresses, a
    group stopped) keeps its last counts in its entry, so nothing goes backwards; two
    groups of the same name (two routes to one upstream) add up in one entry.
    """

    def __init__(self, board: Board, slot: int) -> None:
        self._board = board
        self._base = board.base(slot)
        self._entries: dict[bytes, int] = {}
        #: each server seen at the last sample: its entry, its counters then (requests,
        #: failures, ejections, then the latency histogram's buckets) and latency sum
        self._last: dict[object, tuple[int, list[int], float]] = {}
        #: per entry: the counters and latency sum of servers that have left
        self._gone: dict[int, tuple[list[int], list[float]]] = {}

    def _entry(self, key: bytes) -> int:
        index = self._entries.get(key)
        if index is None:
            index = self._board.claim(self._base, key)
            self._entries[key] = index
        return index

    def sample(self) -> None:
        group_module = sys.modules.get("bastion.upstream.group")
        if group_module is None and not self._last:
            return  # no reverse proxy in this worker
        groups: list[Any] = list(group_module.RUNNING) if group_module is not None else []
        width = len(_ADDED)
        current: dict[object, tuple[int, list[int], float]] = {}
        sums: dict[int, list[int]] = {}  # the counters, then in flight and idle
        seconds: dict[int, float] = {}
        states: dict[int, int] = {}
        latency: dict[int, float] = {}
        for group in groups:
            now = group.now()
            for server in group.servers:
                stats = server.stats(now)
                index = self._entry(server_key(group.name, stats["server"]))
                counters = [
                    server.requests,
                    server.failures,
                    server.ejections_total,
                    *server.latency_counts,
                ]
                current[server] = (index, counters, server.latency_total)
                row = sums.setdefault(index, [0] * (width + 2))
                for k in range(width):
                    row[k] += counters[k]
                row[width] += server.in_flight
                row[width + 1] += len(server.idle)
                seconds[index] = seconds.get(index, 0.0) + server.latency_total
                if states.get(index) != 1:  # up wins: some group here can send to it
                    states[index] = _STATE_CODE.get(stats["state"], 0)
                latency[index] = max(latency.get(index, 0.0), stats["latency_ewma"])
        for server, (index, counters, total) in self._last.items():
            if server not in current:
                gone, gone_total = self._gone.setdefault(index, ([0] * width, [0.0]))
                for k in range(width):
                    gone[k] += counters[k]
                gone_total[0] += total
        self._last = current
        ints, floats, lay = self._board.ints, self._board.floats, self._board.layout
        for index in set(self._entries.values()):
            e = self._base + lay.entry(index)
            row = sums.get(index, [0] * (width + 2))
            gone, gone_total = self._gone.get(index, ([0] * width, [0.0]))
            # the sum before the counts: a reader that sees a count sees its time too
            floats[e + U_HIST_SUM] = seconds.get(index, 0.0) + gone_total[0]
            for k, cell in enumerate(_ADDED):
                ints[e + cell] = row[k] + gone[k]
            ints[e + U_IN_FLIGHT] = row[width]
            ints[e + U_IDLE] = row[width + 1]
            floats[e + U_LATENCY] = latency.get(index, 0.0)
            ints[e + U_STATE] = states.get(index, 0)
