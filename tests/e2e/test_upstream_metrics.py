"""Per-upstream-server metrics end to end: an edge bastion (two workers, the admin
listener on) proxies to two backend bastions; /metrics, parsed by prometheus_client,
counts each server's requests, shows a killed backend down once the health checks
notice, and keeps every server's counters across a SIGHUP that replaces the workers."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from admin_tools import admin_url, metrics, sample, wait_until
from server import BastionProcess, serve

UP = "bastion_upstream_requests_total"


def _edge(tmp_path: Path, servers: list[str]) -> BastionProcess:
    listed = ", ".join(f'"{s}"' for s in servers)
    config = tmp_path / "edge.toml"
    config.write_text(
        f"[upstreams.back]\nservers = [{listed}]\n"
        'balance = "round_robin"\nhealth_path = "/"\nhealth_interval = 0.2\n'
        "health_fall = 1\nhealth_rise = 1\nhealth_jitter = 0\nmax_fails = 1\n\n"
        '[[routes]]\npath = "/"\nproxy = { upstream = "back" }\n'
    )
    return BastionProcess(
        [
            "serve",
            "-c",
            str(config),
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--admin",
            "127.0.0.1:0",
        ]
    )


def _workers(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    """The pids of the workers /metrics lists."""
    return {
        dict(labels)["worker"] for name, labels in found if name == "bastion_worker_age_seconds"
    }


def _address(proc: BastionProcess) -> str:
    host, port = proc.host_port
    return f"{host}:{port}"


def test_upstream_metrics_count_each_server_and_show_a_dead_one_down(tmp_path: Path) -> None:
    with (
        serve("admin_app:app", "--workers", "1") as a,
        serve("admin_app:app", "--workers", "1") as b,
    ):
        sa, sb = _address(a), _address(b)
        with _edge(tmp_path, [sa, sb]) as edge, httpx.Client(base_url=edge.url) as client:
            admin = admin_url(edge)
            pids = set()
            for _ in range(40):
                r = client.get("/")
                assert r.status_code == 200, r.text
                pids.add(r.text)
            assert len(pids) == 2  # both backends answered

            def counted() -> bool:
                m = metrics(admin)
                return (
                    sample(m, UP, upstream="back", server=sa)
                    + sample(m, UP, upstream="back", server=sb)
                    == 40
                )

            assert wait_until(counted, 5)
            m = metrics(admin)
            ra = sample(m, UP, upstream="back", server=sa)
            rb = sample(m, UP, upstream="back", server=sb)
            assert abs(ra - rb) <= 2, (ra, rb)  # round robin in each worker
            for s in (sa, sb):
                assert sample(m, "bastion_upstream_server_up", upstream="back", server=s) == 1
                assert sample(m, "bastion_upstream_failures_total", upstream="back", server=s) == 0
                assert sample(m, "bastion_upstream_in_flight", upstream="back", server=s) == 0
                workers = sample(
                    m, "bastion_upstream_server_workers", upstream="back", server=s, state="up"
                )
                assert workers == 2
                assert sample(m, "bastion_upstream_latency_seconds", upstream="back", server=s) > 0
                # every answer's latency is in the server's histogram
                hist = "bastion_upstream_response_seconds"
                count = sample(m, hist + "_count", upstream="back", server=s)
                assert count == sample(m, UP, upstream="back", server=s), s
                assert sample(m, hist + "_bucket", upstream="back", server=s, le="+Inf") == count
                assert 0 < sample(m, hist + "_sum", upstream="back", server=s) < count * 5
            idle = sum(
                sample(m, "bastion_upstream_idle_connections", upstream="back", server=s)
                for s in (sa, sb)
            )
            assert idle >= 1  # keep-alive connections pooled

            b.signal(signal.SIGKILL)
            b.wait(10)

            def b_down() -> bool:
                m = metrics(admin)
                return (
                    sample(m, "bastion_upstream_server_up", upstream="back", server=sb) == 0
                    and sample(
                        m,
                        "bastion_upstream_server_workers",
                        upstream="back",
                        server=sb,
                        state="unhealthy",
                    )
                    == 2
                )

            assert wait_until(b_down, 10), metrics(admin)
            for _ in range(10):
                assert client.get("/").status_code == 200

            def moved() -> bool:
                return sample(metrics(admin), UP, upstream="back", server=sa) >= ra + 10

            assert wait_until(moved, 5)
            m = metrics(admin)
            assert sample(m, UP, upstream="back", server=sa) == ra + 10
            assert sample(m, UP, upstream="back", server=sb) == rb  # no more tries sent to it
            assert sample(m, "bastion_upstream_server_up", upstream="back", server=sa) == 1

            # a SIGHUP replaces both workers: their counts move to the retired ones and
            # no server's counter goes backwards
            old = _workers(metrics(admin))
            assert len(old) == 2
            edge.signal(signal.SIGHUP)
            edge.wait_for_log(r"reload complete", 30)

            def replaced() -> bool:
                now = _workers(metrics(admin))
                return len(now) == 2 and not now & old

            assert wait_until(replaced, 20)
            after = metrics(admin)
            assert sample(after, UP, upstream="back", server=sa) == ra + 10
            assert sample(after, UP, upstream="back", server=sb) == rb
