"""The Prometheus text format of ``/metrics``, written from a :class:`Reading` of the
board (docs/operations.md lists the metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable

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
    GENERATIONS,
    H_DRAINING,
    H_RESTARTS,
    H_STARTED,
    IN_FLIGHT,
    LOOP_LAG,
    METHODS,
    OTHER_ROUTE,
    RATE_LIMITED,
    REQUESTS,
    RESTART_CAUSES,
    SHED,
    STATE_NAMES,
    STATUS_CLASSES,
    TLS_CONNECTIONS,
    TLS_EVICTED,
    TLS_FAILED,
    TLS_IN_PROGRESS,
    TLS_REFUSED,
    TLS_WAITING,
    UPSTREAM_STATES,
    WS_ENDED,
    WS_OPEN,
    Board,
)
from bastion.observe.reading import Reading, ServerView, WorkerView, is_ready, read_board


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

    def histogram(self, name: str, counts: list[int], total: float, **labels: object) -> None:
        """One histogram's samples from its non-cumulative bucket counts (the last one:
        above every bound) and the sum of what it observed."""
        running = 0
        for bound, count in zip(BUCKETS, counts, strict=False):
            running += count
            self.sample(name + "_bucket", running, **labels, le=repr(bound))
        running += counts[-1]
        self.sample(name + "_bucket", running, **labels, le="+Inf")
        self.sample(name + "_count", running, **labels)
        self.sample(name + "_sum", total, **labels)

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
    merged: dict[tuple[str, str, str], int] = {}
    for ri, route in enumerate(route_names):
        for mi, method in enumerate(METHODS):
            for ci, klass in enumerate(STATUS_CLASSES):
                value = t[lay.request_cell(ri, mi, ci)]
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
        w.histogram("bastion_http_request_duration_seconds", counts, total, route=route)

    w.family("bastion_http_requests_in_flight", "gauge", "Connections answering a request.")
    w.sample("bastion_http_requests_in_flight", r.sampled(IN_FLIGHT))
    w.family("bastion_connections_open", "gauge", "Open client connections.")
    w.sample("bastion_connections_open", r.sampled(CONNECTIONS))
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
        w.sample(name, r.sampled(cell))
    w.family("bastion_websocket_sessions_open", "gauge", "Upgraded sessions (WebSockets) open.")
    w.sample("bastion_websocket_sessions_open", r.sampled(WS_OPEN))
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
    servers = r.servers()
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
        w.histogram(name, v.buckets, v.seconds, upstream=v.upstream, server=v.server)
    name = "bastion_upstream_server_workers"
    w.family(name, "gauge", "Workers seeing each upstream server in each state.")
    for v in live:
        for i, state in enumerate(UPSTREAM_STATES[1:]):
            w.sample(name, v.states[i], upstream=v.upstream, server=v.server, state=state)
