"""Balancers, server lines and passive ejection, without sockets (no I/O to fake)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bastion.config.schema import UpstreamConfig
from bastion.upstream.address import ServerAddressError, parse_server
from bastion.upstream.balancers import LeastRequests, PeakEwma, SmoothRoundRobin
from bastion.upstream.group import NoServer, Upstream
from bastion.upstream.server import Server


def servers(*weights: int) -> list[Server]:
    return [Server(parse_server(f"10.0.0.{i + 1}:80 weight={w}")) for i, w in enumerate(weights)]


# -- server lines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "unix", "weight", "max_conns", "backup"),
    [
        ("10.0.0.5:8000", "10.0.0.5", 8000, "", 1, 0, False),
        ("[2001:db8::1]:8443 weight=3", "2001:db8::1", 8443, "", 3, 0, False),
        ("unix:/run/app.sock backup", "", 0, "/run/app.sock", 1, 0, True),
        ("http://api.internal", "api.internal", 80, "", 1, 0, False),
        ("http://127.0.0.1:9000/ max_conns=10", "127.0.0.1", 9000, "", 1, 10, False),
        ("https://api.internal", "api.internal", 443, "", 1, 0, False),
    ],
)
def test_server_lines(
    text: str, host: str, port: int, unix: str, weight: int, max_conns: int, backup: bool
) -> None:
    spec = parse_server(text)
    assert (spec.host, spec.port, spec.unix_path) == (host, port, unix)
    assert (spec.weight, spec.max_conns, spec.backup) == (weight, max_conns, backup)
    assert spec.tls == text.startswith("https://")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.0.0.5",
        "2001:db8::1:80",
        "[nope]:80",
        "10.0.0.5:0",
        "h:1 weight=0",
        "h:1 heavy",
        "ftp://h:21",
        "http://h/path",
        "unix:",
        "bad_host!:80",
    ],
)
def test_bad_server_lines(text: str) -> None:
    with pytest.raises(ServerAddressError, match=r"expected|weight|option"):
        parse_server(text)


# -- balancers --------------------------------------------------------------------------


def test_smooth_round_robin_spreads_weights_evenly() -> None:
    a, b, c = servers(5, 1, 1)
    rr = SmoothRoundRobin()
    picks = [rr.choose([a, b, c], 0.0, b"") for _ in range(7)]
    assert [p.spec.host for p in picks] == [
        "10.0.0.1",
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.1",
        "10.0.0.3",
        "10.0.0.1",
        "10.0.0.1",
    ]  # nginx's sequence for 5:1:1: a a b a c a a
    counts = Counter(rr.choose([a, b, c], 0.0, b"").spec.host for _ in range(7000))
    assert counts == {"10.0.0.1": 5000, "10.0.0.2": 1000, "10.0.0.3": 1000}


def test_least_requests_prefers_the_idle_server_and_shares_ties() -> None:
    a, b, c = servers(1, 1, 2)
    lr = LeastRequests(random.Random(1))
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 4  # c: 4 / weight 2 = 2
    assert lr.choose([a, b, c], 0.0, b"") is b
    a.in_flight = b.in_flight = c.in_flight = 0
    counts = Counter(lr.choose([a, b, c], 0.0, b"").spec.host for _ in range(3000))
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_peak_ewma_moves_traffic_away_from_a_slow_server() -> None:
    fast1, fast2, slow = servers(1, 1, 1)
    p2c = PeakEwma(random.Random(7))
    now = 100.0
    for s in (fast1, fast2):
        s.observe_latency(0.002, now)
    slow.observe_latency(0.200, now)
    counts = Counter(p2c.choose([fast1, fast2, slow], now, b"").spec.host for _ in range(3000))
    # the slow one wins only when it is not drawn against a fast one: never, with two picks
    assert counts["10.0.0.3"] == 0, counts
    assert abs(counts["10.0.0.1"] - counts["10.0.0.2"]) < 400
    # under load (one request in flight on each fast server) it still loses at first;
    # its figure decays while the fast ones keep answering, and tens of seconds later
    # it is tried again (and takes its share while it is not measured slow again)
    fast1.in_flight = fast2.in_flight = 1
    counts = Counter(p2c.choose([fast1, fast2, slow], now, b"").spec.host for _ in range(3000))
    assert counts["10.0.0.3"] == 0, counts
    later = now + 60
    for s in (fast1, fast2):
        s.observe_latency(0.002, later)
    counts = Counter(p2c.choose([fast1, fast2, slow], later, b"").spec.host for _ in range(3000))
    assert counts["10.0.0.3"] > 1500, counts
    # measured slow again: it loses again at once (the peak)
    slow.observe_latency(0.200, later)
    counts = Counter(p2c.choose([fast1, fast2, slow], later, b"").spec.host for _ in range(3000))
    assert counts["10.0.0.3"] == 0, counts


def test_peak_ewma_tries_a_server_never_measured_at_once() -> None:
    # a server that has not answered yet (new, or not chosen so far) is tried at once,
    # not left out because the measured ones answer faster than its guess
    fast1, fast2, fresh = servers(1, 1, 1)
    p2c = PeakEwma(random.Random(3))
    now = 100.0
    for s in (fast1, fast2):
        s.observe_latency(0.0002, now)
    assert p2c.choose([fast1, fresh], now, b"") is fresh
    # while its first requests wait, its guess weighs them: it is not flooded
    fresh.in_flight = 2
    counts = Counter(p2c.choose([fast1, fast2, fresh], now, b"").spec.host for _ in range(3000))
    assert counts["10.0.0.3"] == 0, counts


def test_peak_ewma_spreads_evenly_between_equal_servers() -> None:
    group = servers(1, 1, 1, 1)
    p2c = PeakEwma(random.Random(3))
    counts = Counter(p2c.choose(group, 0.0, b"").spec.host for _ in range(8000))
    assert all(1600 < n < 2400 for n in counts.values()), counts


# -- ejection ---------------------------------------------------------------------------


def group(n: int, **kw: object) -> Upstream:
    cfg = UpstreamConfig(servers=tuple(f"10.0.0.{i + 1}:80" for i in range(n)), **kw)  # type: ignore[arg-type]
    return Upstream("g", cfg, SmoothRoundRobin())


def test_consecutive_failures_eject_with_growing_time_and_success_resets() -> None:
    up = group(4, max_fails=3, fail_timeout=10.0)
    s = up.primary[0]
    for _ in range(2):
        up.record_failure(s, 0.0)
    assert s.available(0.0)
    up.record_success(s)  # the count starts again
    for _ in range(2):
        up.record_failure(s, 0.0)
    assert s.available(0.0)
    up.record_failure(s, 0.0)
    assert not s.available(5.0) and s.available(10.5)
    for _ in range(3):
        up.record_failure(s, 11.0)  # failed again after its return: twice as long
    assert not s.available(30.0) and s.available(31.5)
    assert all(up.choose(12.0, None) is not s for _ in range(20))


def test_never_more_than_the_configured_share_is_ejected() -> None:
    up = group(4, max_fails=1, max_ejected_percent=50)
    for s in up.primary:
        up.record_failure(s, 0.0)
    assert sum(not s.available(0.0) for s in up.primary) == 2
    one = group(1, max_fails=1)
    one.record_failure(one.primary[0], 0.0)
    assert one.primary[0].available(0.0)  # the only server stays


def test_unreachable_servers_go_past_the_share_but_never_the_last() -> None:
    """A server that refuses connections helps nobody: ejected whatever the share,
    as nginx does, except the last one that can take requests; one that answers badly
    is held to the share (a failure every server shows must not empty the group)."""
    up = group(3, max_fails=1, max_ejected_percent=50)
    a, b, c = up.primary
    up.record_failure(a, 0.0, connected=False)
    up.record_failure(b, 0.0, connected=False)
    assert [s.available(0.0) for s in (a, b, c)] == [False, False, True]
    up.record_failure(c, 0.0, connected=False)
    assert c.available(0.0)  # the last one stays
    answered = group(3, max_fails=1, max_ejected_percent=50)
    for s in answered.primary:
        answered.record_failure(s, 0.0)  # (bad answers)
    assert sum(not s.available(0.0) for s in answered.primary) == 1


def test_every_primary_may_go_when_a_backup_can_take_over() -> None:
    cfg = UpstreamConfig(servers=("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80 backup"), max_fails=1)
    up = Upstream("g", cfg)
    for s in up.primary:
        up.record_failure(s, 0.0)  # (5xx answers: past max_ejected_percent, 50)
    assert not any(s.available(0.0) for s in up.primary)
    assert all(up.choose(0.0, None) is up.backup[0] for _ in range(5))
    up.record_failure(up.backup[0], 0.0, connected=False)
    assert up.backup[0].available(0.0)  # the last one that can take requests


def test_backups_only_when_no_primary_can_take_it() -> None:
    cfg = UpstreamConfig(
        servers=("10.0.0.1:80", "10.0.0.2:80 backup"), max_fails=1, max_ejected_percent=100
    )
    up = Upstream("g", cfg)
    assert up.choose(0.0, None).spec.host == "10.0.0.1"
    up.record_failure(up.primary[0], 0.0)
    assert up.choose(0.0, None).spec.host == "10.0.0.2"
    with pytest.raises(NoServer):
        up.choose(0.0, [up.backup[0]])


def test_max_conns_caps_requests_in_flight() -> None:
    up = Upstream("g", UpstreamConfig(servers=("10.0.0.1:80 max_conns=2",)))
    s = up.primary[0]
    s.in_flight = 2
    with pytest.raises(NoServer):
        up.choose(0.0, None)


def test_peak_ewma_treats_differences_under_the_floor_as_ties() -> None:
    # two healthy servers a few tenths of a millisecond apart share the traffic: the
    # difference is noise, not a reason to leave one out while its figure decays
    a, b = servers(1, 1)
    p2c = PeakEwma(random.Random(5))
    now = 100.0
    a.observe_latency(0.0003, now)
    b.observe_latency(0.0009, now)  # a first answer a little slower
    counts = Counter(p2c.choose([a, b], now, b"").spec.host for _ in range(2000))
    assert counts["10.0.0.1"] > 900 and counts["10.0.0.2"] > 900, counts
    b.observe_latency(0.020, now)  # twenty milliseconds is slower: it loses
    counts = Counter(p2c.choose([a, b], now, b"").spec.host for _ in range(2000))
    assert counts["10.0.0.2"] == 0, counts


def test_no_server_is_logged_at_most_once_a_second() -> None:
    up = group(2)
    assert up.no_server(100.0) == 0  # logged
    assert up.no_server(100.5) == -1  # (not logged)
    assert up.no_server(100.9) == -1
    assert up.no_server(101.2) == 2  # logged, with the two that were not
    assert up.no_server(101.3) == -1
    assert up.no_server(3600.0) == 0  # (the one of an outage long over is not counted)
