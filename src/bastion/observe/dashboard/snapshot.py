"""What the dashboard draws: successive readings of the board turned into rates and
percentiles over the last second, sent to the page at ``/events``."""

from __future__ import annotations

import time

from bastion.observe.board import (
    BUCKETS,
    CONNECTIONS,
    GC_PAUSE,
    GENERATIONS,
    H_DRAINING,
    H_RESTARTS,
    IN_FLIGHT,
    LOOP_LAG,
    METHODS,
    REQUESTS,
    RESTART_CAUSES,
    STATUS_CLASSES,
    TLS_CONNECTIONS,
    TLS_EVICTED,
    TLS_FAILED,
    TLS_IN_PROGRESS,
    TLS_REFUSED,
    TLS_WAITING,
    WS_ENDED,
    WS_OPEN,
    Board,
)
from bastion.observe.reading import Reading, is_ready, read_board


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


def _gc_pause(r: Reading) -> float:
    """Seconds spent in garbage collections, every generation."""
    return sum(r.total_floats[GC_PAUSE + g] for g in range(GENERATIONS))


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

        statuses = {k: 0 for k in STATUS_CLASSES}
        status_totals = {k: 0 for k in STATUS_CLASSES}
        for ri in range(lay.capacity):
            for mi in range(len(METHODS)):
                for ci, klass in enumerate(STATUS_CLASSES):
                    cell = lay.request_cell(ri, mi, ci)
                    statuses[klass] += delta(cell)
                    status_totals[klass] += r.totals[cell]
        buckets = [0] * lay.nbuckets
        for ri in range(lay.capacity):
            for b in range(lay.nbuckets):
                buckets[b] += delta(lay.hist + ri * lay.nbuckets + b)
        gc_pause = _gc_pause(r)
        prev_pause = _gc_pause(prev) if prev is not None else gc_pause
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
        for v in r.servers():
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
            "in_flight": r.sampled(IN_FLIGHT),
            "connections": r.sampled(CONNECTIONS),
            "gc_pause_ms": round((gc_pause - prev_pause) * 1000.0, 3),
            "gc_pause_total_ms": round(gc_pause * 1000.0, 3),
            "restarts": {cause: r.header[H_RESTARTS + i] for i, cause in enumerate(RESTART_CAUSES)},
            "workers": workers,
            "upstreams": upstreams,
            "tls": {
                "handshakes": r.totals[TLS_CONNECTIONS],
                "per_second": round(delta(TLS_CONNECTIONS) / elapsed, 1),
                "in_progress": r.sampled(TLS_IN_PROGRESS),
                "waiting": r.sampled(TLS_WAITING),
                "refused": r.totals[TLS_REFUSED],
                "evicted": r.totals[TLS_EVICTED],
                "failed": r.totals[TLS_FAILED],
            },
            "websockets": {
                "open": r.sampled(WS_OPEN),
                "ended": r.totals[WS_ENDED],
                "ended_per_second": round(delta(WS_ENDED) / elapsed, 1),
            },
        }
        self._last = r
        self._last_at = now
        self.current = snap
        return snap
