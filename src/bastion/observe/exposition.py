"""Reading the board: the Prometheus text format for ``/metrics`` and the snapshots the
dashboard draws.

Runs in the admin process. What the board does not hold it reads from ``/proc``: each
worker's CPU time, RSS and PSS (no work for the worker at all).
"""

from __future__ import annotations

import os
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from bastion.observe.board import (
    ADDITIVE,
    AUTH_REJECTED,
    BUCKETS,
    BYTES_IN,
    BYTES_OUT,
    CONNECTIONS,
    CPU_SECONDS,
    EVICTED,
    FREE,
    GC_COLLECTED,
    GC_COLLECTIONS,
    GC_PAUSE,
    GENERATION,
    GENERATIONS,
    H_BEAT,
    H_DRAINING,
    H_READY,
    H_RESTARTS,
    H_SEQ,
    H_STARTED,
    IN_FLIGHT,
    LOOP_LAG,
    METHODS,
    OTHER_ROUTE,
    PID,
    RATE_LIMITED,
    REQUESTS,
    RESTART_CAUSES,
    SHED,
    STARTED,
    STATE,
    STATE_NAMES,
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
    U_NAME,
    U_NAME_CELLS,
    U_NAME_LEN,
    U_REQUESTS,
    U_STATE,
    UPSTREAM_SERVERS,
    UPSTREAM_STATES,
    WS_ENDED,
    WS_OPEN,
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


# -- the Prometheus text format ----------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: object) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(board: Board, reading: Reading | None = None) -> str:
    r = reading or read_board(board)
    lay = board.layout
    t, tf = r.totals, r.total_floats
    w = _Writer()
    route_names = board.route_names()

    # requests by route, method and status class; merging routes that share a label
    w.family("bastion_http_requests_total", "counter", "Finished HTTP responses.")
    per_route = len(METHODS) * len(STATUS_CLASSES)
    merged: dict[tuple[str, str, str], int] = {}
    for ri, route in enumerate(route_names):
        for mi, method in enumerate(METHODS):
            for ci, klass in enumerate(STATUS_CLASSES):
                value = t[lay.requests + ri * per_route + mi * 5 + ci]
                if value:
                    key = (route, method, klass)
                    merged[key] = merged.get(key, 0) + value
    for (route, method, klass), value in sorted(merged.items()):
        w.sample("bastion_http_requests_total", value, route=route, method=method, status=klass)

    w.family(
        "bastion_http_request_duration_seconds",
        "histogram",
        "Time from the request head to the end of the response, by route.",
    )
    hists: dict[str, tuple[list[int], float]] = {}
    for ri, route in enumerate(route_names):
        counts = t[lay.hist + ri * lay.nbuckets : lay.hist + (ri + 1) * lay.nbuckets]
        total = tf[lay.hist_sum + ri]
        if not route or (route == OTHER_ROUTE and not any(counts)):
            continue  # a free entry, or no route beyond the table
        if route in hists:
            old, old_sum = hists[route]
            counts = [a + b for a, b in zip(old, counts, strict=True)]
            total += old_sum
        hists[route] = (list(counts), total)
    for route, (counts, total) in hists.items():
        running = 0
        for bound, count in zip(BUCKETS, counts, strict=False):
            running += count
            w.sample(
                "bastion_http_request_duration_seconds_bucket", running, route=route, le=repr(bound)
            )
        running += counts[-1]
        w.sample("bastion_http_request_duration_seconds_bucket", running, route=route, le="+Inf")
        w.sample("bastion_http_request_duration_seconds_count", running, route=route)
        w.sample("bastion_http_request_duration_seconds_sum", total, route=route)

    w.family("bastion_http_requests_in_flight", "gauge", "Connections answering a request.")
    w.sample("bastion_http_requests_in_flight", sum(x.cells[IN_FLIGHT] for x in r.workers))
    w.family("bastion_connections_open", "gauge", "Open client connections.")
    w.sample("bastion_connections_open", sum(x.cells[CONNECTIONS] for x in r.workers))
    for name, cell, text in (
        ("bastion_http_request_body_bytes_total", BYTES_IN, "Request body bytes received."),
        ("bastion_http_response_body_bytes_total", BYTES_OUT, "Response body bytes sent."),
        (
            "bastion_auth_rejections_total",
            AUTH_REJECTED,
            "Requests answered 401 (authentication required or refused).",
        ),
        ("bastion_rate_limit_rejections_total", RATE_LIMITED, "Requests answered 429."),
        ("bastion_websocket_sessions_total", WS_ENDED, "Upgraded sessions (WebSockets) ended."),
        ("bastion_tls_handshakes_total", TLS_CONNECTIONS, "TLS handshakes completed."),
        (
            "bastion_tls_handshakes_refused_total",
            TLS_REFUSED,
            "TLS connections closed unanswered: no handshake slot came free within "
            "tls.handshake_wait.",
        ),
        (
            "bastion_tls_handshakes_evicted_total",
            TLS_EVICTED,
            "TLS handshakes cut after a second at tls.max_handshakes to let a newer connection in.",
        ),
        (
            "bastion_tls_handshakes_failed_total",
            TLS_FAILED,
            "TLS handshakes that failed, timed out or lost their client.",
        ),
    ):
        w.family(name, "counter", text)
        w.sample(name, t[cell])
    for name, cell, text in (
        ("bastion_tls_handshakes_in_progress", TLS_IN_PROGRESS, "TLS handshakes in progress."),
        (
            "bastion_tls_handshakes_waiting",
            TLS_WAITING,
            "TLS connections waiting for a handshake slot (tls.max_handshakes).",
        ),
    ):
        w.family(name, "gauge", text)
        w.sample(name, sum(x.cells[cell] for x in r.workers))
    w.family("bastion_websocket_sessions_open", "gauge", "Upgraded sessions (WebSockets) open.")
    w.sample("bastion_websocket_sessions_open", sum(x.cells[WS_OPEN] for x in r.workers))
    w.family(
        "bastion_connections_dropped_total",
        "counter",
        "Hostile-client defences: connections evicted for new ones, or shed to bound "
        "pending output.",
    )
    w.sample("bastion_connections_dropped_total", t[EVICTED], reason="evicted")
    w.sample("bastion_connections_dropped_total", t[SHED], reason="shed")

    _upstream_metrics(w, r)

    w.family("bastion_gc_collections_total", "counter", "Garbage collections, by generation.")
    for g in range(GENERATIONS):
        w.sample("bastion_gc_collections_total", t[GC_COLLECTIONS + g], generation=g)
    w.family("bastion_gc_collected_objects_total", "counter", "Objects the collector freed.")
    for g in range(GENERATIONS):
        w.sample("bastion_gc_collected_objects_total", t[GC_COLLECTED + g], generation=g)
    w.family("bastion_gc_pause_seconds_total", "counter", "Time spent in garbage collections.")
    for g in range(GENERATIONS):
        w.sample("bastion_gc_pause_seconds_total", tf[GC_PAUSE + g], generation=g)

    w.family("bastion_worker_restarts_total", "counter", "Workers replaced, by cause.")
    for i, cause in enumerate(RESTART_CAUSES):
        w.sample("bastion_worker_restarts_total", r.header[H_RESTARTS + i], cause=cause)

    live = [x for x in r.workers if x.pid]
    now = time.time()
    per_worker: tuple[tuple[str, str, str, Callable[[WorkerView], float]], ...] = (
        (
            "bastion_worker_cpu_seconds_total",
            "counter",
            "CPU time of each worker, user and system.",
            lambda x: x.cpu,
        ),
        ("bastion_worker_resident_memory_bytes", "gauge", "RSS of each worker.", lambda x: x.rss),
        (
            "bastion_worker_proportional_memory_bytes",
            "gauge",
            "PSS of each worker (shared pages split among their users).",
            lambda x: x.pss,
        ),
        (
            "bastion_worker_requests_total",
            "counter",
            "Responses finished by each worker.",
            lambda x: x.cells[REQUESTS],
        ),
        (
            "bastion_worker_age_seconds",
            "gauge",
            "Time since each worker was started.",
            lambda x: max(0.0, now - x.started),
        ),
        (
            "bastion_event_loop_lag_seconds",
            "gauge",
            "How late each worker's once-a-second timer last ran.",
            lambda x: x.floats[LOOP_LAG],
        ),
    )
    for name, kind, text, get in per_worker:
        w.family(name, kind, text)
        for x in live:
            w.sample(name, get(x), worker=x.pid)

    w.family("bastion_workers", "gauge", "Worker processes, by state.")
    for state in STATE_NAMES[1:]:
        w.sample("bastion_workers", sum(1 for x in live if x.state == state), state=state)
    w.family("bastion_ready", "gauge", "1 when /readyz answers 200.")
    w.sample("bastion_ready", int(is_ready(r)))
    w.family("bastion_draining", "gauge", "1 once a SIGTERM started the drain.")
    w.sample("bastion_draining", r.header[H_DRAINING])
    w.family("bastion_start_time_seconds", "gauge", "When the supervisor started (Unix time).")
    w.sample("bastion_start_time_seconds", r.header_floats[H_STARTED])
    return w.text()


def _upstream_metrics(w: _Writer, r: Reading) -> None:
    """Per upstream server (labels ``upstream`` and ``server``)."""
    servers = sorted(r.upstreams.values(), key=lambda v: (v.upstream, v.server))
    live = [v for v in servers if any(v.states)]
    counters: tuple[tuple[str, str, Callable[[ServerView], float]], ...] = (
        (
            "bastion_upstream_requests_total",
            "Tries sent to each upstream server (retries count again), all workers.",
            lambda v: v.requests,
        ),
        (
            "bastion_upstream_failures_total",
            "Failed tries: connect errors, timeouts, 5xx and malformed responses.",
            lambda v: v.failures,
        ),
        (
            "bastion_upstream_ejections_total",
            "Times a worker took the server out of rotation after failures in a row.",
            lambda v: v.ejections,
        ),
    )
    for name, text, get in counters:
        w.family(name, "counter", text)
        for v in servers:
            w.sample(name, get(v), upstream=v.upstream, server=v.server)
    gauges: tuple[tuple[str, str, Callable[[ServerView], float]], ...] = (
        (
            "bastion_upstream_in_flight",
            "Requests waiting on each upstream server now, all workers.",
            lambda v: v.in_flight,
        ),
        (
            "bastion_upstream_idle_connections",
            "Idle keep-alive connections to each upstream server, all workers.",
            lambda v: v.idle,
        ),
        (
            "bastion_upstream_latency_seconds",
            "Peak-EWMA response-head latency of each upstream server: the highest "
            "among the workers.",
            lambda v: v.latency,
        ),
        (
            "bastion_upstream_server_up",
            "1 when at least one worker sends requests to the server (not ejected, "
            "not failing health checks, not draining).",
            lambda v: int(v.up),
        ),
    )
    for name, text, get in gauges:
        w.family(name, "gauge", text)
        for v in live:
            w.sample(name, get(v), upstream=v.upstream, server=v.server)
    name = "bastion_upstream_response_seconds"
    w.family(
        name,
        "histogram",
        "Time from sending a request to each upstream server to its response head.",
    )
    for v in servers:
        running = 0
        for bound, count in zip(BUCKETS, v.buckets, strict=False):
            running += count
            w.sample(
                name + "_bucket", running, upstream=v.upstream, server=v.server, le=repr(bound)
            )
        running += v.buckets[-1]
        w.sample(name + "_bucket", running, upstream=v.upstream, server=v.server, le="+Inf")
        w.sample(name + "_sum", v.seconds, upstream=v.upstream, server=v.server)
        w.sample(name + "_count", running, upstream=v.upstream, server=v.server)
    name = "bastion_upstream_server_workers"
    w.family(name, "gauge", "Workers seeing each upstream server in each state.")
    for v in live:
        for i, state in enumerate(UPSTREAM_STATES[1:]):
            w.sample(name, v.states[i], upstream=v.upstream, server=v.server, state=state)


def is_ready(r: Reading) -> bool:
    return bool(r.header[H_READY]) and not r.header[H_DRAINING]


def supervisor_alive(board: Board, within: float) -> bool:
    return time.monotonic() - board.floats[H_BEAT] < within


# -- the dashboard's snapshot ------------------------------------------------------------
def percentile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram's non-cumulative bucket counts, by linear
    interpolation inside the bucket (as PromQL's histogram_quantile does)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    running = 0
    lower = 0.0
    for i, count in enumerate(counts):
        upper = BUCKETS[i] if i < len(BUCKETS) else BUCKETS[-1]
        if running + count >= rank and count:
            return lower + (upper - lower) * (rank - running) / count
        running += count
        lower = upper
    return BUCKETS[-1]


class Snapshots:
    """Turns successive readings into what the dashboard shows: rates and percentiles
    over the last second."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._last: Reading | None = None
        self._last_at = 0.0
        self._last_cpu: dict[int, tuple[float, float]] = {}
        self.current: dict[str, object] = {}

    def take(self) -> dict[str, object]:
        board = self.board
        lay = board.layout
        now = time.monotonic()
        r = read_board(board)
        prev = self._last
        elapsed = max(1e-6, now - self._last_at) if prev is not None else 1.0

        def delta(cell: int) -> int:
            return r.totals[cell] - (prev.totals[cell] if prev is not None else r.totals[cell])

        per_route = len(METHODS) * len(STATUS_CLASSES)
        statuses = {k: 0 for k in STATUS_CLASSES}
        status_totals = {k: 0 for k in STATUS_CLASSES}
        for ri in range(lay.capacity):
            for mi in range(len(METHODS)):
                for ci, klass in enumerate(STATUS_CLASSES):
                    cell = lay.requests + ri * per_route + mi * 5 + ci
                    statuses[klass] += delta(cell)
                    status_totals[klass] += r.totals[cell]
        buckets = [0] * lay.nbuckets
        for ri in range(lay.capacity):
            for b in range(lay.nbuckets):
                buckets[b] += delta(lay.hist + ri * lay.nbuckets + b)
        gc_pause = sum(r.total_floats[GC_PAUSE + g] for g in range(GENERATIONS))
        prev_pause = (
            sum(prev.total_floats[GC_PAUSE + g] for g in range(GENERATIONS))
            if prev is not None
            else gc_pause
        )
        wall = time.time()
        workers = []
        cpu_now: dict[int, tuple[float, float]] = {}
        for x in sorted(r.workers, key=lambda v: v.slot):
            last = self._last_cpu.get(x.pid)
            cpu_now[x.pid] = (x.cpu, now)
            share = (x.cpu - last[0]) / max(1e-6, now - last[1]) if last is not None else 0.0
            workers.append(
                {
                    "pid": x.pid,
                    "state": x.state,
                    "cpu": round(share * 100.0, 1),
                    "rss": x.rss,
                    "pss": x.pss,
                    "requests": x.cells[REQUESTS],
                    "age": round(max(0.0, wall - x.started), 1),
                    "connections": x.cells[CONNECTIONS],
                    "lag_ms": round(x.floats[LOOP_LAG] * 1000.0, 2),
                }
            )
        self._last_cpu = cpu_now
        upstreams = []
        for v in sorted(r.upstreams.values(), key=lambda v: (v.upstream, v.server)):
            before = prev.upstreams.get((v.upstream, v.server)) if prev is not None else None
            upstreams.append(
                {
                    "upstream": v.upstream,
                    "server": v.server,
                    "state": v.state,
                    "rps": round((v.requests - before.requests) / elapsed, 1) if before else 0.0,
                    "requests": v.requests,
                    "failures": v.failures,
                    "in_flight": v.in_flight,
                    "latency_ms": round(v.latency * 1000.0, 3),
                }
            )

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000.0, 3)

        snap: dict[str, object] = {
            "time": wall,
            "ready": is_ready(r),
            "draining": bool(r.header[H_DRAINING]),
            "requests": r.totals[REQUESTS],
            "rps": round(delta(REQUESTS) / elapsed, 1),
            "statuses": {k: round(v / elapsed, 1) for k, v in statuses.items()},
            "status_totals": status_totals,
            "p50_ms": ms(percentile(buckets, 0.5)),
            "p90_ms": ms(percentile(buckets, 0.9)),
            "p99_ms": ms(percentile(buckets, 0.99)),
            "in_flight": sum(x.cells[IN_FLIGHT] for x in r.workers),
            "connections": sum(x.cells[CONNECTIONS] for x in r.workers),
            "gc_pause_ms": round((gc_pause - prev_pause) * 1000.0, 3),
            "gc_pause_total_ms": round(gc_pause * 1000.0, 3),
            "restarts": {cause: r.header[H_RESTARTS + i] for i, cause in enumerate(RESTART_CAUSES)},
            "workers": workers,
            "upstreams": upstreams,
            "tls": {
                "handshakes": r.totals[TLS_CONNECTIONS],
                "per_second": round(delta(TLS_CONNECTIONS) / elapsed, 1),
                "in_progress": sum(x.cells[TLS_IN_PROGRESS] for x in r.workers),
                "waiting": sum(x.cells[TLS_WAITING] for x in r.workers),
                "refused": r.totals[TLS_REFUSED],
                "evicted": r.totals[TLS_EVICTED],
                "failed": r.totals[TLS_FAILED],
            },
            "websockets": {
                "open": sum(x.cells[WS_OPEN] for x in r.workers),
                "ended": r.totals[WS_ENDED],
                "ended_per_second": round(delta(WS_ENDED) / elapsed, 1),
            },
        }
        self._last = r
        self._last_at = now
        self.current = snap
        return snap
