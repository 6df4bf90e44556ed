"""The proxy's balancing and health end to end: consistent hashing, sticky cookies,
active health checks, the retry budget, the total timeout and a server given by name,
through a real bastion to small raw-socket servers (tests/e2e/upstream_servers.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from test_proxy import proxy
from upstream_servers import CLOSE, RawServer, Request, response


def named(name: str, health: Callable[[], int] | None = None) -> Callable[[Request], bytes]:
    def handler(req: Request) -> bytes:
        if req.target == "/health":
            return response(health() if health is not None else 200, b"")
        return response(200, name.encode())

    return handler


def test_hash_on_a_header_keeps_each_key_on_one_server(tmp_path: Path) -> None:
    with (
        RawServer(named("a")) as a,
        RawServer(named("b")) as b,
        RawServer(named("c")) as c,
        proxy(
            tmp_path,
            [a.address, b.address, c.address],
            'balance = "hash"\nhash_on = "header:x-user"',
        ) as p,
        httpx.Client(base_url=p.url) as client,
    ):
        seen: dict[str, set[str]] = {}
        for _ in range(3):
            for user in range(30):
                r = client.get("/", headers={"x-user": f"user-{user}"})
                seen.setdefault(f"user-{user}", set()).add(r.text)
        assert all(len(servers) == 1 for servers in seen.values()), seen
        spread = Counter(next(iter(servers)) for servers in seen.values())
        assert len(spread) == 3, spread  # 30 keys over 3 servers: each gets some


def test_sticky_cookie_returns_a_client_to_its_server_while_it_is_healthy(
    tmp_path: Path,
) -> None:
    status = {"a": 200, "b": 200}
    with (
        RawServer(named("a", lambda: status["a"])) as a,
        RawServer(named("b", lambda: status["b"])) as b,
        proxy(
            tmp_path,
            [a.address, b.address],
            'balance = "round_robin"\nsticky_cookie = "srv"\nhealth_path = "/health"\n'
            "health_interval = 0.2\nhealth_fall = 1\nhealth_rise = 1\nhealth_jitter = 0",
        ) as p,
        httpx.Client(base_url=p.url) as client,
    ):
        first = client.get("/")
        cookie = first.headers["set-cookie"]
        assert cookie.startswith("srv=") and "HttpOnly" in cookie and "Path=/" in cookie
        assert "127.0.0.1" not in cookie
        home = first.text
        for _ in range(10):  # round robin would alternate; the cookie holds it
            r = client.get("/")
            assert r.text == home
            assert "set-cookie" not in r.headers  # already right: not sent again
        # a new client without the cookie goes by round robin and is told its server
        fresh = httpx.get(p.url + "/")
        assert fresh.headers["set-cookie"].startswith("srv=")
        # its server fails its health checks: the client moves and gets a new cookie
        status[home] = 503
        deadline = time.monotonic() + 10
        while (r := client.get("/")).text == home:
            assert time.monotonic() < deadline, "the sticky server was never taken out"
            time.sleep(0.1)
        assert r.headers["set-cookie"] != cookie
        assert all(client.get("/").text == r.text for _ in range(5))


def test_active_checks_take_a_server_out_and_bring_it_back(tmp_path: Path) -> None:
    status = {"a": 200}
    with (
        RawServer(named("a", lambda: status["a"])) as a,
        RawServer(named("b")) as b,
        proxy(
            tmp_path,
            [a.address, b.address],
            'balance = "round_robin"\nhealth_path = "/health"\nhealth_interval = 0.2\n'
            "health_fall = 2\nhealth_rise = 3\nhealth_jitter = 0.2\nhealth_timeout = 1",
        ) as p,
        httpx.Client(base_url=p.url) as client,
    ):
        assert Counter(client.get("/").text for _ in range(10)) == {"a": 5, "b": 5}
        checks = [r for r in a.requests if r.target == "/health"]
        assert checks and checks[0].header("user-agent") == "bastion-health-check"
        status["a"] = 500
        p.wait_for_log(r"upstream back: 127\.0\.0\.1:\d+ is out \(2 failed health checks")
        before = len([r for r in a.requests if r.target == "/"])
        assert {client.get("/").text for _ in range(10)} == {"b"}
        assert len([r for r in a.requests if r.target == "/"]) == before  # no tries either
        status["a"] = 200
        p.wait_for_log(r"upstream back: 127\.0\.0\.1:\d+ is back \(passed 3 health checks\)")
        assert Counter(client.get("/").text for _ in range(10)) == {"a": 5, "b": 5}


def test_checks_that_time_out_fail(tmp_path: Path) -> None:
    async def slow_health(req: Request) -> bytes:
        if req.target == "/health":
            await asyncio.sleep(5)
        return response(200, b"slow")

    with (
        RawServer(slow_health) as a,
        RawServer(named("b")) as b,
        proxy(
            tmp_path,
            [a.address, b.address],
            'health_path = "/health"\nhealth_interval = 0.2\nhealth_timeout = 0.2\nhealth_fall = 1',
        ) as p,
    ):
        p.wait_for_log(r"is out \(1 failed health checks, the last: no answer within 0.2 s\)")
        assert {httpx.get(p.url + "/").text for _ in range(6)} == {"b"}


def test_retry_budget_stops_retries_when_every_server_fails(tmp_path: Path) -> None:
    def tries(budget: float) -> int:
        with (
            RawServer(lambda req: CLOSE) as a,
            RawServer(lambda req: CLOSE) as b,
            proxy(
                tmp_path,
                [a.address, b.address],
                f"retries = 1\nretry_budget = {budget}\nretry_min_per_second = 0\nmax_fails = 1000",
            ) as p,
            httpx.Client(base_url=p.url) as client,
        ):
            for _ in range(50):
                assert client.get("/").status_code == 502
            return len(a.requests) + len(b.requests)

    assert tries(10.0) == 100  # without a budget: every request tried twice
    assert 50 <= tries(0.2) <= 61  # a fifth more at most: 50 firsts, 10 retries


def test_total_timeout_bounds_every_try_together(tmp_path: Path) -> None:
    async def slow(req: Request) -> bytes:
        await asyncio.sleep(3)
        return response(200, b"late")

    with (
        RawServer(slow) as a,
        RawServer(slow) as b,
        proxy(tmp_path, [a.address, b.address], "retries = 1\ntimeout = 0.6\n") as p,
    ):
        started = time.monotonic()
        r = httpx.get(p.url + "/", timeout=10)
        took = time.monotonic() - started
        assert r.status_code == 504
        assert r.text == "504 Gateway Timeout (upstream back)\n"
        p.wait_for_log(r"timeout \(0\.6 s\)", 5)  # the detail is for the log only
        assert 0.5 < took < 2.5  # not first_byte_timeout (60 s), nor two tries of it
        assert len(a.requests) + len(b.requests) == 1  # no retry after the total timeout


def test_a_server_given_by_name_is_resolved_and_followed(tmp_path: Path) -> None:
    with RawServer(named("a")) as a:
        port = a.port
        with (
            proxy(tmp_path, [f"localhost:{port}"], "resolve_interval = 0.3") as p,
            httpx.Client(base_url=p.url) as client,
        ):
            time.sleep(0.8)  # a few resolutions
            # localhost may also resolve to ::1, where nothing listens: that try fails
            # to connect and the request goes to 127.0.0.1
            assert all(client.get("/").text == "a" for _ in range(5))
