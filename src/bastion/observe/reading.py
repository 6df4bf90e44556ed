"""Reading the board: one consistent :class:`Reading` of every worker's slot, the
retired counters and the upstream-server tables, for ``/metrics``
(:mod:`bastion.observe.prometheus`), the dashboard
(:mod:`bastion.observe.dashboard.snapshot`) and the health checks.

Runs in the admin process. What the board does not hold it reads from ``/proc``: each
worker's CPU time, RSS and PSS (no work for the worker at all).
"""

from __future__ import annotations

import os
import time
from array import array
from dataclasses import dataclass, field

from bastion.observe.board import (
    ADDITIVE,
    BUCKETS,
    CPU_SECONDS,
    FREE,
    GC_PAUSE,
    GENERATION,
    GENERATIONS,
    H_BEAT,
    H_DRAINING,
    H_READY,
    H_SEQ,
    PID,
    STARTED,
    STATE,
    STATE_NAMES,
    U_EJECTIONS,
    U_FAILURES,
    U_HIST,
    U_HIST_SUM,
    U_IDLE,
    U_IN_FLIGHT,
    U_LATENCY,
    U_NAME,
    U_NAME_CELLS,
    U_NAME_LEN,
    U_REQUESTS,
    U_STATE,
    UPSTREAM_SERVERS,
    UPSTREAM_STATES,
    Board,
    split_key,
)

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class WorkerView:
    slot: int
    pid: int
    state: str
    generation: int
    started: float  # wall clock
    cells: list[int]
    floats: list[float]
    cpu: float = 0.0  # seconds, user + system
    rss: int = 0
    pss: int = 0


@dataclass
class ServerView:
    """One upstream server over every worker: counters summed with the retired ones;
    gauges from the live workers only."""

    upstream: str
    server: str
    requests: int = 0
    failures: int = 0
    ejections: int = 0
    in_flight: int = 0
    idle: int = 0
    latency: float = 0.0  # the highest peak-EWMA latency among the workers, seconds
    #: the response-head latency histogram: counts per bucket (the last: +Inf), and sum
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    seconds: float = 0.0
    #: how many live workers see it in each of UPSTREAM_STATES[1:] (up, ejected, ...)
    states: list[int] = field(default_factory=lambda: [0] * (len(UPSTREAM_STATES) - 1))

    @property
    def up(self) -> bool:
        """Some worker can send it requests."""
        return self.states[0] > 0

    @property
    def state(self) -> str:
        """ "up" when some worker sees it up, else the state most workers see, "gone" when
        no worker has it any more."""
        if self.states[0]:
            return "up"
        if not any(self.states):
            return "gone"
        best = max(range(len(self.states)), key=lambda i: self.states[i])
        return UPSTREAM_STATES[best + 1]


@dataclass
class Reading:
    """One consistent look at the board."""

    header: list[int]
    header_floats: list[float]
    totals: list[int]  # every additive cell and request/histogram cell, summed
    total_floats: list[float]
    workers: list[WorkerView] = field(default_factory=list)
    upstreams: dict[tuple[str, str], ServerView] = field(default_factory=dict)

    def sampled(self, cell: int) -> int:
        """A sampled state (open connections, requests in flight, ...) summed over the
        workers' slots."""
        return sum(x.cells[cell] for x in self.workers)

    def servers(self) -> list[ServerView]:
        """The upstream servers, by upstream then server."""
        return sorted(self.upstreams.values(), key=lambda v: (v.upstream, v.server))


def _entries(board: Board, cells: list[int]) -> list[tuple[tuple[str, str], int]]:
    """The named upstream-server entries of one slot's cells: (labels, first cell)."""
    lay = board.layout
    found = []
    for index in range(UPSTREAM_SERVERS):
        e = lay.entry(index)
        size = cells[e + U_NAME_LEN]
        if not 0 < size <= U_NAME_CELLS * 8:
            continue
        name = array("q", cells[e + U_NAME : e + U_NAME + U_NAME_CELLS]).tobytes()[:size]
        found.append((split_key(name), e))
    return found


def _servers(
    board: Board, totals: list[int], total_floats: list[float], workers: list[WorkerView]
) -> dict[tuple[str, str], ServerView]:
    out: dict[tuple[str, str], ServerView] = {}

    def view(labels: tuple[str, str]) -> ServerView:
        v = out.get(labels)
        if v is None:
            v = out[labels] = ServerView(*labels)
        return v

    def add(v: ServerView, cells: list[int], floats: list[float], e: int) -> None:
        v.requests += cells[e + U_REQUESTS]
        v.failures += cells[e + U_FAILURES]
        v.ejections += cells[e + U_EJECTIONS]
        for k in range(len(v.buckets)):
            v.buckets[k] += cells[e + U_HIST + k]
        v.seconds += floats[e + U_HIST_SUM]

    for labels, e in _entries(board, totals):
        add(view(labels), totals, total_floats, e)
    for w in workers:
        for labels, e in _entries(board, w.cells):
            v = view(labels)
            add(v, w.cells, w.floats, e)
            state = w.cells[e + U_STATE]
            if 0 < state < len(UPSTREAM_STATES):
                v.states[state - 1] += 1
                v.in_flight += w.cells[e + U_IN_FLIGHT]
                v.idle += w.cells[e + U_IDLE]
                v.latency = max(v.latency, w.floats[e + U_LATENCY])
    return out


def proc_stats(pid: int) -> tuple[float, int, int]:
    """CPU seconds, RSS and PSS in bytes of process ``pid`` (zeros if it is gone)."""
    cpu = 0.0
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        rss = int(fields[21]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0.0, 0, 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except (OSError, IndexError, ValueError):
        pss = 0
    return cpu, rss, pss


def read_board(board: Board, with_proc: bool = True) -> Reading:
    """Sum the retired counters and every live worker's, retrying while the supervisor
    is folding an exited worker (so no count is seen twice or missed)."""
    ints, floats = board.ints, board.floats
    n = board.slot_cells
    for _ in range(100):
        seq = ints[H_SEQ]
        if seq % 2:
            time.sleep(0.0005)
            continue
        rb = board.base(-1)
        totals = list(ints[rb : rb + n])
        tfloats = list(floats[rb : rb + n])
        workers: list[WorkerView] = []
        for slot in range(board.slots):
            b = board.base(slot)
            state = ints[b + STATE]
            if state == FREE:
                continue
            cells = list(ints[b : b + n])
            fl = list(floats[b : b + n])
            workers.append(
                WorkerView(
                    slot=slot,
                    pid=cells[PID],
                    state=STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else "?",
                    generation=cells[GENERATION],
                    started=fl[STARTED],
                    cells=cells,
                    floats=fl,
                )
            )
        if ints[H_SEQ] != seq:
            continue
        break
    lay = board.layout
    summed = [*ADDITIVE, *range(lay.requests, lay.hist_sum)]
    float_cells = [*range(GC_PAUSE, GC_PAUSE + GENERATIONS), *range(lay.hist_sum, lay.upstream)]
    for w in workers:
        for cell in summed:
            totals[cell] += w.cells[cell]
        for cell in float_cells:
            tfloats[cell] += w.floats[cell]
        if with_proc and w.pid:
            w.cpu, w.rss, w.pss = proc_stats(w.pid)
            # the worker's own sample is finer than /proc's ticks but up to a second old
            w.cpu = max(w.cpu, w.floats[CPU_SECONDS])
    return Reading(
        header=list(ints[0:32]),
        header_floats=list(floats[0:32]),
        totals=totals,
        total_floats=tfloats,
        workers=workers,
        upstreams=_servers(board, totals, tfloats, workers),
    )


def is_ready(r: Reading) -> bool:
    return bool(r.header[H_READY]) and not r.header[H_DRAINING]


def supervisor_alive(board: Board, within: float) -> bool:
    return time.monotonic() - board.floats[H_BEAT] < within
