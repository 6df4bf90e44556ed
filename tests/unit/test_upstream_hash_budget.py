"""Consistent hashing's remapping share, sticky tokens, the retry budget, the health
checks' rise/fall bookkeeping and name re-resolution (with a real getaddrinfo on
localhost, then a swapped lookup standing for the name's addresses changing)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from typing import Any

from bastion.config.schema import UpstreamConfig
from bastion.tasks import WorkerTasks
from bastion.upstream.address import parse_server
from bastion.upstream.balancers import ConsistentHash
from bastion.upstream.budget import RetryBudget
from bastion.upstream.group import Upstream
from bastion.upstream.health import HealthChecker
from bastion.upstream.server import Server

KEYS = [b"198.51.100.%d:%d" % (i % 250, i) for i in range(20000)]


def ring_servers(n: int) -> list[Server]:
    return [Server(parse_server(f"10.0.0.{i + 1}:80")) for i in range(n)]


def owners(ring: ConsistentHash, servers: list[Server]) -> list[str]:
    return [ring.choose(servers, 0.0, key).spec.host for key in KEYS]


def test_hash_is_stable_and_spreads_keys() -> None:
    servers = ring_servers(5)
    ring = ConsistentHash(servers)
    first = owners(ring, servers)
    assert first == owners(ConsistentHash(servers), servers)  # same in every worker
    counts = Counter(first)
    for host in counts:  # each about a fifth
        assert 0.12 < counts[host] / len(KEYS) < 0.28, counts


def test_a_joining_server_takes_about_one_nth_of_the_keys_from_the_others() -> None:
    servers = ring_servers(6)
    before = owners(ConsistentHash(servers[:5]), servers[:5])
    after = owners(ConsistentHash(servers), servers)
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert 0.5 / 6 < len(moved) / len(KEYS) < 1.6 / 6, len(moved)
    assert {a for _, a in moved} == {"10.0.0.6"}  # every moved key went to the new one


def test_a_leaving_or_ejected_server_moves_only_its_own_keys() -> None:
    servers = ring_servers(6)
    ring = ConsistentHash(servers)
    before = owners(ring, servers)
    gone = servers[2]
    # ejected (not a candidate): the ring stays, its keys walk on to the next server
    after = owners(ring, [s for s in servers if s is not gone])
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert {b for b, _ in moved} == {"10.0.0.3"}
    assert 0.5 / 6 < len(moved) / len(KEYS) < 1.6 / 6
    assert len({a for _, a in moved}) == 5  # spread over the others, not dumped on one
    # removed for good (the ring rebuilt without it): the same keys move, the same way
    ring.rebuild([s for s in servers if s is not gone])
    assert owners(ring, [s for s in servers if s is not gone]) == after


def test_weight_is_more_of_the_ring() -> None:
    heavy, light = (Server(parse_server(f"10.0.0.{i}:80 weight={w}")) for i, w in ((1, 3), (2, 1)))
    ring = ConsistentHash([heavy, light])
    counts = Counter(ring.choose([heavy, light], 0.0, k).spec.host for k in KEYS)
    assert 0.65 < counts["10.0.0.1"] / len(KEYS) < 0.85


def test_no_key_goes_to_any_candidate() -> None:
    servers = ring_servers(3)
    ring = ConsistentHash(servers, random.Random(1))
    assert len({ring.choose(servers, 0.0, b"").spec.host for _ in range(100)}) == 3


def test_sticky_tokens_are_opaque_stable_and_keyed() -> None:
    cfg = UpstreamConfig(servers=("10.0.0.1:80", "10.0.0.2:80"), sticky_cookie="srv")
    a, b = Upstream("api", cfg), Upstream("api", cfg)
    tokens = [s.token for s in a.servers]
    assert tokens == [s.token for s in b.servers]  # every worker agrees
    assert len(set(tokens)) == 2 and all(b"10.0.0" not in t for t in tokens)
    secret = Upstream("api", UpstreamConfig(servers=cfg.servers, sticky_secret="s3cret"))
    assert not set(tokens) & {s.token for s in secret.servers}


# -- the retry budget -------------------------------------------------------------------


def test_retry_budget_is_a_share_of_recent_requests_plus_a_floor() -> None:
    budget = RetryBudget(0.2, 0.0)
    for _ in range(100):
        budget.request(1000.0)
    allowed = sum(budget.try_retry(1000.5) for _ in range(100))
    assert allowed == 20
    # ten seconds on, the old traffic has left the window: nothing to retry on
    assert not budget.try_retry(1011.0)
    floor = RetryBudget(0.2, 1.0)  # 1 a second over a 10 s window: 10 with no traffic
    assert sum(floor.try_retry(50.0) for _ in range(30)) == 10


# -- health check bookkeeping -----------------------------------------------------------


def test_fall_then_rise() -> None:
    cfg = UpstreamConfig(servers=("10.0.0.1:80",), health_path="/h", health_rise=2, health_fall=3)
    server = Server(parse_server("10.0.0.1:80"))
    checker = HealthChecker("g", cfg, lambda: [server], WorkerTasks())
    for verdict in ("status 500", "status 500", "", "status 500", "status 500"):
        checker.record(server, verdict)
    assert server.healthy  # a pass in between resets the failures
    checker.record(server, "status 500")
    assert not server.healthy and not server.available(0.0)
    checker.record(server, "")
    assert not server.healthy
    checker.record(server, "")
    assert server.healthy and server.available(0.0)


# -- names ------------------------------------------------------------------------------


def test_names_resolve_and_follow_changes() -> None:
    async def main() -> None:
        cfg = UpstreamConfig(servers=("localhost:8080 weight=2", "127.0.0.9:80"))
        up = Upstream("g", cfg)
        assert [s.spec.host for s in up.servers] == ["localhost", "127.0.0.9"]
        await up.resolve()  # the real resolver: localhost is a loopback address
        hosts = [s.spec.host for s in up.servers]
        assert "localhost" not in hosts and "127.0.0.9" in hosts
        assert {h for h in hosts if h != "127.0.0.9"} <= {"127.0.0.1", "::1"}
        assert all(s.spec.weight == 2 for s in up.servers if s.spec.host != "127.0.0.9")
        old = next(s for s in up.servers if s.spec.host == "127.0.0.1")

        answers: list[list[str]] = [["127.0.0.1", "127.0.0.3"], ["127.0.0.3"]]

        async def lookup(host: str, port: int, *, type: int) -> list[Any]:
            assert (host, port, type) == ("localhost", 8080, socket.SOCK_STREAM)
            return [(socket.AF_INET, type, 6, "", (a, port)) for a in answers.pop(0)]

        up.getaddrinfo = lookup
        await up.resolve()  # an address joins, the known one is kept with its counters
        assert sorted(s.spec.host for s in up.servers) == ["127.0.0.1", "127.0.0.3", "127.0.0.9"]
        assert old in up.servers and not old.draining
        await up.resolve()  # an address leaves: it drains
        assert sorted(s.spec.host for s in up.servers) == ["127.0.0.3", "127.0.0.9"]
        assert old.draining
        assert [st["server"] for st in up.stats()] == ["127.0.0.3:8080", "127.0.0.9:80"]

    asyncio.run(main())


def test_stats_report_each_servers_counters_and_state() -> None:
    async def main() -> None:
        cfg = UpstreamConfig(servers=("10.0.0.1:80", "10.0.0.2:80"), max_fails=1)
        up = Upstream("g", cfg)
        a, b = up.servers
        a.requests, b.requests = 3, 1
        now = up.now()
        up.record_failure(a, now)
        a.observe_latency(0.25, now)
        b.healthy = False
        first, second = up.stats()
        assert first["server"] == "10.0.0.1:80" and first["state"] == "ejected"
        assert (first["requests"], first["failures"], first["ejections"]) == (3, 1, 1)
        assert 0.2 < float(str(first["latency_ewma"])) <= 0.25
        assert second["state"] == "unhealthy" and second["failures"] == 0

    asyncio.run(main())
