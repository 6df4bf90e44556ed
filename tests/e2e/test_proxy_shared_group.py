"""One upstream group per worker, whatever the number of routes that name it: the
routes share its pooled connections, its passive ejections and its health checks,
while their own settings (here ``strip_prefix``) stay theirs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from server import BastionProcess
from upstream_servers import RawServer, Request, response


def echo(req: Request) -> bytes:
    return response(200, req.target.encode(), [("X-Conn", str(req.conn))])


@contextmanager
def two_routes(
    tmp_path: Path, servers: list[str], upstream: str = "", routes: int = 2
) -> Iterator[BastionProcess]:
    """A site with ``routes`` prefix routes /r0/, /r1/, ... all proxying to ``back``
    (the first one strips its prefix, the others do not)."""
    listed = ", ".join(f'"{s}"' for s in servers)
    text = f"[upstreams.back]\nservers = [{listed}]\n{upstream}\n"
    for i in range(routes):
        strip = "true" if i == 0 else "false"
        text += (
            f'\n[[routes]]\npath = "/r{i}/"\n'
            f'proxy = {{ upstream = "back", strip_prefix = {strip} }}\n'
        )
    config = tmp_path / "shared.toml"
    config.write_text(text)
    with BastionProcess(
        ["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"]
    ) as proc:
        yield proc


def test_two_routes_share_the_groups_kept_alive_connections(tmp_path: Path) -> None:
    with RawServer(echo) as up, two_routes(tmp_path, [up.address]) as p:
        with httpx.Client() as c:
            for i in range(6):
                route = i % 2
                r = c.get(f"{p.url}/r{route}/x")
                assert r.status_code == 200, p.log
                # per-route settings stay per route
                assert r.text == ("/x" if route == 0 else "/r1/x")
        # one pooled connection served both routes' requests
        assert up.connections == 1, [r.target for r in up.requests]
        assert {r.conn for r in up.requests} == {1}
        assert len(up.requests) == 6


def test_a_server_ejected_through_one_route_is_out_for_the_other(tmp_path: Path) -> None:
    with (
        RawServer(lambda req: response(500, b"down")) as sick,
        RawServer(echo) as well,
        two_routes(
            tmp_path,
            [sick.address, well.address],
            upstream='balance = "round_robin"\nmax_fails = 2\nfail_timeout = 30.0',
        ) as p,
    ):
        with httpx.Client() as c:
            codes = [c.get(p.url + "/r0/a").status_code for _ in range(6)]
            assert codes.count(500) == 2, codes  # two failures in a row, then out
            assert len(sick.requests) == 2
            codes = [c.get(p.url + "/r1/b").status_code for _ in range(6)]
        # the other route does not send to the ejected server either
        assert codes == [200] * 6
        assert len(sick.requests) == 2
        assert len(well.requests) == 10


def test_the_group_is_health_checked_once_per_interval_not_once_per_route(
    tmp_path: Path,
) -> None:
    checks: list[float] = []

    def handler(req: Request) -> bytes:
        if req.target == "/health":
            checks.append(time.monotonic())
        return response(200, b"ok")

    with (
        RawServer(handler) as up,
        two_routes(
            tmp_path,
            [up.address],
            upstream='health_path = "/health"\nhealth_interval = 0.25\nhealth_jitter = 0.0',
            routes=3,
        ) as p,
    ):
        assert httpx.get(p.url + "/r1/").status_code == 200
        time.sleep(0.5)
        start = len(checks)
        time.sleep(2.0)
        seen = len(checks) - start
    # one group: about 8 checks in 2 s (three routes each checking would make ~24)
    assert 3 <= seen <= 13, seen
