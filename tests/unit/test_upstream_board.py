"""The board's upstream-server table: entries named by their labels, the overflow entry
("other"), counts kept when a server leaves its group, and folded by name into the
retired counters when a worker exits (so a counter never goes backwards)."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from bastion.config.schema import UpstreamConfig
from bastion.observe.board import UPSTREAM_SERVERS, Board
from bastion.observe.prometheus import render_metrics
from bastion.observe.reading import read_board
from bastion.observe.recorder import UpstreamSampler
from bastion.upstream.group import RUNNING, Upstream


def _samples(board: Board) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(render_metrics(board)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _requests(board: Board, upstream: str, server: str) -> float:
    key = ("bastion_upstream_requests_total", (("server", server), ("upstream", upstream)))
    return _samples(board).get(key, -1.0)


def _started(board: Board, slot: int) -> None:
    board.reset(slot)
    board.started(slot, 0, 1)


def _with_groups(*groups: Upstream) -> None:
    async def start() -> None:
        for group in groups:
            group.start(None)

    asyncio.run(start())


def test_counts_reach_metrics_and_survive_a_server_leaving_and_the_worker_exiting() -> None:
    board = Board(["app"], 2)
    _started(board, 0)
    group = Upstream("back", UpstreamConfig(servers=("127.0.0.1:1", "127.0.0.1:2")))
    _with_groups(group)
    try:
        sampler = UpstreamSampler(board, 0)
        one, two = group.servers
        one.requests, one.failures, one.in_flight = 7, 2, 1
        two.requests = 5
        two.eject(group.now(), 10.0)
        now = group.now()
        for seconds in (0.0004, 0.003, 0.003, 7.0):  # bucket 0.0005, 0.005 twice, 10
            two.observe_latency(seconds, now)
        sampler.sample()
        r = read_board(board, with_proc=False)
        a, b = r.upstreams["back", "127.0.0.1:1"], r.upstreams["back", "127.0.0.1:2"]
        assert (a.requests, a.failures, a.in_flight, a.state) == (7, 2, 1, "up")
        assert (b.requests, b.ejections, b.state) == (5, 1, "ejected")
        assert _requests(board, "back", "127.0.0.1:1") == 7
        # the second server leaves the group (its name re-resolved elsewhere): its count
        # stays, it is no longer up anywhere
        group.lines.pop()
        group._arrange()
        one.requests = 9
        sampler.sample()
        r = read_board(board, with_proc=False)
        assert r.upstreams["back", "127.0.0.1:2"].requests == 5
        assert r.upstreams["back", "127.0.0.1:2"].state == "gone"
        buckets, count = _histogram(board, "127.0.0.1:2")
        assert (buckets["0.0005"], buckets["0.005"], buckets["5.0"], count) == (1, 3, 3, 4)
        assert r.upstreams["back", "127.0.0.1:1"].requests == 9
        # the worker exits: its counts move to the retired ones, same totals
        board.exited(0)
        assert _requests(board, "back", "127.0.0.1:1") == 9
        assert _requests(board, "back", "127.0.0.1:2") == 5
        buckets, count = _histogram(board, "127.0.0.1:2")
        assert (buckets["0.005"], buckets["5.0"], buckets["10.0"], count) == (3, 3, 4, 4)
        sums = _samples(board)
        labels = (("server", "127.0.0.1:2"), ("upstream", "back"))
        assert abs(sums["bastion_upstream_response_seconds_sum", labels] - 7.0064) < 1e-9
        # its successor counts from zero, added to the retired counts
        _started(board, 1)
        UpstreamSampler(board, 1)._entry(b"back\x00127.0.0.1:1")
        board.ints[board.base(1) + board.layout.entry(0) + 1] = 3
        assert _requests(board, "back", "127.0.0.1:1") == 12
        samples = _samples(board)
        up = ("bastion_upstream_server_up", (("server", "127.0.0.1:2"), ("upstream", "back")))
        assert up not in samples  # no live worker has it: no gauges, counters only
    finally:
        group.stop()
        board.close()
    assert group not in RUNNING


def test_servers_beyond_the_cap_add_up_under_other() -> None:
    board = Board(["app"], 1)
    _started(board, 0)
    servers = [f"127.0.0.1:{port}" for port in range(1, UPSTREAM_SERVERS + 11)]
    group = Upstream("big", UpstreamConfig(servers=tuple(servers)))
    _with_groups(group)
    try:
        for server in group.servers:
            server.requests = 1
        UpstreamSampler(board, 0).sample()
        r = read_board(board, with_proc=False)
        assert len(r.upstreams) == UPSTREAM_SERVERS
        assert (
            r.upstreams["other", "other"].requests == 11
        )  # 74 servers: 63 entries of their own, 11 beyond
        assert sum(v.requests for v in r.upstreams.values()) == len(servers)
        assert _requests(board, "other", "other") == 11
    finally:
        group.stop()
        board.close()


def _histogram(board: Board, server: str) -> tuple[dict[str, float], float]:
    """The latency histogram's cumulative buckets (by ``le``) and count for ``server``."""
    buckets: dict[str, float] = {}
    count = 0.0
    for (name, labels), value in _samples(board).items():
        found = dict(labels)
        if found.get("server") != server:
            continue
        if name == "bastion_upstream_response_seconds_bucket":
            buckets[found["le"]] = value
        elif name == "bastion_upstream_response_seconds_count":
            count = value
    return buckets, count
