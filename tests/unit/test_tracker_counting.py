"""The connection tracker's response counting (by route, method, status class and latency
bucket), which keeps runs of alike responses in native fields: what reaches its lists and
the metrics board must be every response, whatever the order they came in."""

from __future__ import annotations

import random

from bastion.observe.board import BUCKETS, METHOD_INDEX, METHODS, REQUESTS, Board
from bastion.observe.recorder import Recorder
from bastion.protocol.state import ConnectionTracker

ROUTES = 3


def expected(
    responses: list[tuple[str, int, int, float]],
) -> tuple[list[int], list[float]]:
    """The counts and latency sums of ``responses``, laid out as the tracker's."""
    per_route = len(METHODS) * 5
    nb = len(BUCKETS) + 1
    counts = [0] * (ROUTES * (per_route + nb))
    sums = [0.0] * ROUTES
    for method, route, status, duration in responses:
        r = route if 0 <= route < ROUTES else ROUTES - 1
        m = METHOD_INDEX.get(method, len(METHODS) - 1)
        cls = status // 100 - 1 if 100 <= status < 600 else 4
        counts[r * per_route + m * 5 + cls] += 1
        bucket = next((i for i, bound in enumerate(BUCKETS) if duration <= bound), nb - 1)
        counts[ROUTES * per_route + r * nb + bucket] += 1
        sums[r] += duration
    return counts, sums


def test_runs_and_changes_all_reach_the_counts() -> None:
    rng = random.Random(11)
    tracker = ConnectionTracker()
    tracker.enable_counting(ROUTES, METHOD_INDEX, len(METHODS), BUCKETS)
    methods = ["GET", "POST", "HEAD", "PROPFIND"]
    statuses = [200, 204, 304, 404, 401, 429, 503, 99, 600]
    durations = [0.0, 0.0001, 0.0005, 0.003, 0.2, 7.0, 100.0]
    responses: list[tuple[str, int, int, float]] = []
    folded = 0
    method, route, status, duration = "GET", 0, 200, 0.0
    while len(responses) < 5000:
        # runs of alike responses (a steady load), and responses that differ from the
        # last in one thing or more (each one changed or kept at random)
        if rng.random() < 0.5:
            method = rng.choice(methods)
        if rng.random() < 0.5:
            route = rng.choice([0, 1, 2, 5, -1])
        if rng.random() < 0.5:
            status = rng.choice(statuses)
        if rng.random() < 0.5:
            duration = rng.choice(durations)
        for _ in range(rng.choice([1, 1, 2, 50])):
            tracker.count(method, route, status, 10, 3, duration)
            responses.append((method, route, status, duration))
        if rng.random() < 0.05:  # the recorder's flush, now and then
            tracker.fold()
            folded += 1
    assert folded > 5
    tracker.fold()
    counts, sums = expected(responses)
    assert tracker.counts == counts
    assert all(abs(a - b) < 1e-6 for a, b in zip(tracker.latency_sums, sums, strict=True))
    assert tracker.bytes_out == 10 * len(responses)
    assert tracker.bytes_in == 3 * len(responses)
    assert tracker.auth_rejected == sum(1 for r in responses if r[2] == 401)
    assert tracker.rate_limited == sum(1 for r in responses if r[2] == 429)
    tracker.fold()  # nothing counted twice
    assert tracker.counts == counts


def test_a_flush_shows_the_responses_of_the_run_in_progress() -> None:
    board = Board(["app"], 1)
    try:
        tracker = ConnectionTracker()
        recorder = Recorder(board, 0)
        recorder.attach(tracker)
        for _ in range(3):
            tracker.count("GET", 0, 200, 5, 0, 0.001)
        recorder.flush()
        assert board.ints[board.base(0) + REQUESTS] == 3
        tracker.count("GET", 0, 200, 5, 0, 0.001)
        tracker.count("POST", 0, 500, 5, 0, 0.001)
        recorder.flush()
        assert board.ints[board.base(0) + REQUESTS] == 5
    finally:
        board.close()


def test_counting_again_starts_from_nothing() -> None:
    """A new layout (the recorder attached again) drops the run of the old one."""
    tracker = ConnectionTracker()
    tracker.enable_counting(ROUTES, METHOD_INDEX, len(METHODS), BUCKETS)
    tracker.count("GET", 0, 200, 0, 0, 0.001)
    tracker.enable_counting(ROUTES, METHOD_INDEX, len(METHODS), BUCKETS)
    tracker.count("GET", 0, 200, 0, 0, 0.001)
    tracker.count("GET", 1, 200, 0, 0, 0.001)
    tracker.fold()
    assert tracker.counts == expected([("GET", 0, 200, 0.001), ("GET", 1, 200, 0.001)])[0]
