"""The admin listener (docs/operations.md): /metrics counts what was really sent, the
admin side answers while every worker is stuck, its token, a public address refused,
and /readyz before start-up, while serving and while draining after SIGTERM."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from admin_tools import admin_url, metrics, sample, wait_until
from server import serve

ADMIN = ("--admin", "127.0.0.1:0")
GET_2XX = {"route": "app", "method": "GET", "status": "2xx"}


def test_metrics_count_the_requests_sent() -> None:
    with serve("admin_app:app", "--workers", "2", *ADMIN) as server:
        admin = admin_url(server)
        sent_bytes = 0
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for _ in range(30):
                r = client.get("/")
                assert r.status_code == 200
                sent_bytes += len(r.content)
            for _ in range(5):
                assert client.head("/").status_code == 200
            for _ in range(4):
                assert client.get("/status/503").status_code == 503
            for _ in range(3):
                assert client.post("/status/201", content=b"x" * 100).status_code == 201

        def counted() -> bool:
            found = metrics(admin)
            return sample(found, "bastion_http_request_duration_seconds_count", route="app") == 42

        assert wait_until(counted), metrics(admin)
        found = metrics(admin)

    def requests(method: str, status: str) -> float:
        return sample(
            found, "bastion_http_requests_total", route="app", method=method, status=status
        )

    assert requests("GET", "2xx") == 30
    assert requests("HEAD", "2xx") == 5
    assert requests("GET", "5xx") == 4
    assert requests("POST", "2xx") == 3
    assert sample(found, "bastion_http_response_body_bytes_total") == sent_bytes
    assert sample(found, "bastion_http_request_body_bytes_total") == 300
    # the histogram: cumulative buckets that never go down, +Inf equal to the count
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in found.items()
        if name == "bastion_http_request_duration_seconds_bucket"
    )
    values = [v for _, v in buckets]
    assert values == sorted(values)
    assert buckets[-1] == (float("inf"), 42)
    total = sample(found, "bastion_http_request_duration_seconds_sum", route="app")
    assert 0 < total < 42 * 5
    per_worker = [v for (name, _), v in found.items() if name == "bastion_worker_requests_total"]
    assert len(per_worker) == 2 and sum(per_worker) == 42
    for name in (
        "bastion_worker_resident_memory_bytes",
        "bastion_worker_proportional_memory_bytes",
        "bastion_worker_cpu_seconds_total",
    ):
        assert all(v > 0 for (n, _), v in found.items() if n == name), name
    assert sample(found, "bastion_workers", state="ready") == 2
    assert sample(found, "bastion_ready") == 1

    # garbage collections, timed by gc.callbacks in the worker
    with serve("admin_app:app", "--workers", "1", *ADMIN) as server:
        admin = admin_url(server)
        before = metrics(admin)
        assert httpx.get(server.url + "/gc", timeout=5).status_code == 200
        assert wait_until(
            lambda: (
                sample(metrics(admin), "bastion_gc_collections_total", generation="2")
                > sample(before, "bastion_gc_collections_total", generation="2")
            )
        )
        after = metrics(admin)
    freed = sample(after, "bastion_gc_collected_objects_total", generation="2") - sample(
        before, "bastion_gc_collected_objects_total", generation="2"
    )
    assert freed >= 200
    assert sample(after, "bastion_gc_pause_seconds_total", generation="2") > 0


def test_counts_survive_recycled_workers() -> None:
    """A worker's counts are folded into the totals when it exits: counters never go
    back, and the replacements are counted by cause."""
    with serve("admin_app:app", "--workers", "1", "--max-requests", "10", *ADMIN) as server:
        admin = admin_url(server)
        for _ in range(25):
            assert httpx.get(server.url + "/", timeout=5).status_code == 200

        def done() -> bool:
            found = metrics(admin)
            # the live worker copies its counts to the board once a second
            return (
                sample(found, "bastion_worker_restarts_total", cause="max_requests") >= 2
                and sample(found, "bastion_workers", state="retiring") == 0
                and sample(
                    found, "bastion_http_requests_total", route="app", method="GET", status="2xx"
                )
                == 25
            )

        assert wait_until(done, timeout=20), metrics(admin)


def test_admin_answers_while_every_worker_is_blocked() -> None:
    with serve("admin_app:app", "--workers", "2", "--timeout", "4", *ADMIN) as server:
        admin = admin_url(server)
        host, port = server.host_port
        stuck = []
        for _ in range(2):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            stuck.append(s)
            time.sleep(0.3)
        try:
            with pytest.raises(httpx.TimeoutException):
                httpx.get(server.url + "/", timeout=1.5)  # no worker can answer
            started = time.monotonic()
            assert httpx.get(admin + "/livez", timeout=2).status_code == 200
            assert httpx.get(admin + "/readyz", timeout=2).status_code == 200
            found = metrics(admin, timeout=2)
            assert time.monotonic() - started < 3
            assert sample(found, "bastion_workers", state="ready") == 2
            # the supervisor kills them after workers.timeout, and says why
            assert wait_until(
                lambda: (
                    sample(metrics(admin), "bastion_worker_restarts_total", cause="timeout") == 2
                ),
                timeout=20,
            ), metrics(admin)
        finally:
            for s in stuck:
                s.close()


def test_token_guards_everything_but_the_probes() -> None:
    with serve(
        "admin_app:app", "--workers", "1", *ADMIN, env={"BASTION_ADMIN__TOKEN": "s3cret"}
    ) as server:
        admin = admin_url(server)
        r = httpx.get(admin + "/metrics", timeout=5)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(admin + "/", timeout=5).status_code == 401
        bad = {"authorization": "Bearer s3cre"}
        assert httpx.get(admin + "/metrics", headers=bad, timeout=5).status_code == 401
        good = {"authorization": "Bearer s3cret"}
        assert httpx.get(admin + "/metrics", headers=good, timeout=5).status_code == 200
        assert httpx.get(admin + "/?token=s3cret", timeout=5).status_code == 200
        assert httpx.get(admin + "/readyz", timeout=5).status_code == 200
        assert httpx.get(admin + "/livez", timeout=5).status_code == 200


def test_a_reload_rotates_the_admin_token(tmp_path: Path) -> None:
    import signal

    token = tmp_path / "admin-token"
    token.write_text("first\n")
    config = tmp_path / "bastion.toml"
    config.write_text(f'[app]\ntarget = "admin_app:app"\n[admin]\ntoken_file = "{token}"\n')
    with serve("-c", str(config), "--workers", "1", "--bind", "127.0.0.1:0", *ADMIN) as server:
        admin = admin_url(server)
        first = {"authorization": "Bearer first"}
        second = {"authorization": "Bearer second"}
        assert httpx.get(admin + "/metrics", headers=first, timeout=5).status_code == 200
        token.write_text("second\n")  # a leaked token, rotated by reload
        mark = len(server.log)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload complete" in server.log[mark:], 20), server.log

        def rotated() -> bool:
            try:
                return httpx.get(admin + "/metrics", headers=second, timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(rotated, 10), server.log[mark:]
        assert httpx.get(admin + "/metrics", headers=first, timeout=5).status_code == 401
        assert httpx.get(admin + "/livez", timeout=5).status_code == 200
        assert ": restarting it" not in server.log[mark:]  # (no crash-restart warning)


def test_public_admin_address_is_refused_unless_allowed() -> None:
    server = serve("admin_app:app", "--workers", "1", "--admin", "0.0.0.0:0", wait_ready=False)
    with server:
        assert server.wait(30) != 0
    assert "not a loopback address" in server.log
    allowed = {"BASTION_ADMIN__ALLOW_PUBLIC": "true", "BASTION_ADMIN__TOKEN": "t"}
    with serve("admin_app:app", "--workers", "1", "--admin", "0.0.0.0:0", env=allowed) as server:
        port = int(admin_url(server).rsplit(":", 1)[1])
        r = httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
        assert r.status_code == 200


def test_readyz_before_start_up_and_while_draining() -> None:
    server = serve(
        "admin_app:app",
        "--workers",
        "2",
        "--drain-delay",
        "3",
        *ADMIN,
        env={"ADMIN_START_SECONDS": "2"},
        wait_ready=False,
    )
    with server:
        admin = admin_url(server)
        answers = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                r = httpx.get(admin + "/readyz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.05)  # the admin process is still starting
                continue
            answers.append((r.status_code, r.text))
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert answers[0] == (503, "starting\n"), answers
        assert answers[-1] == (200, "ready\n"), answers
        server.wait_for_log(r"bastion \S+ ready")
        assert httpx.get(server.url + "/", timeout=5).status_code == 200

        server.signal(15)
        signalled = time.monotonic()
        assert wait_until(
            lambda: httpx.get(admin + "/readyz", timeout=2).status_code == 503, timeout=2
        )
        assert httpx.get(admin + "/readyz", timeout=2).text == "draining\n"
        time.sleep(1.0)
        # still serving during the drain delay, on new connections too
        assert httpx.get(server.url + "/", timeout=5).status_code == 200
        assert server.wait(30) == 0
        took = time.monotonic() - signalled
    assert took >= 2.5, took
    assert "workers.drain_delay" in server.log


def test_requests_are_labelled_by_route(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(
        '[app]\ntarget = "admin_app:app"\n\n'
        '[[routes]]\npath = "/health"\nmatch = "exact"\nreturn = { body = "fine" }\n\n'
        '[[routes]]\npath = "/api/"\napp = "default"\n'
    )
    with serve("-c", str(config), "--workers", "1", "--bind", "127.0.0.1:0", *ADMIN) as server:
        admin = admin_url(server)
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for _ in range(3):
                assert client.get("/health").status_code == 200
            for _ in range(2):
                assert client.get("/api/x").status_code == 200
            assert client.get("/elsewhere").status_code == 404

        def counted() -> bool:
            return (
                sum(v for (n, _), v in metrics(admin).items() if n == "bastion_http_requests_total")
                == 6
            )

        assert wait_until(counted), metrics(admin)
        found = metrics(admin)

    def requests(route: str, status: str) -> float:
        return sample(
            found, "bastion_http_requests_total", route=route, method="GET", status=status
        )

    assert requests("/health", "2xx") == 3
    assert requests("/api/", "2xx") == 2
    assert requests("unmatched", "4xx") == 1
    assert sample(found, "bastion_http_request_duration_seconds_count", route="/api/") == 2


def test_routes_added_by_a_reload_get_labels_of_their_own(tmp_path: Path) -> None:
    import signal

    config = tmp_path / "bastion.toml"
    first = (
        '[app]\ntarget = "admin_app:app"\n\n'
        '[[routes]]\npath = "/health"\nmatch = "exact"\nreturn = { body = "fine" }\n\n'
    )
    config.write_text(first)
    with serve("-c", str(config), "--workers", "2", "--bind", "127.0.0.1:0", *ADMIN) as server:
        admin = admin_url(server)
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for _ in range(3):
                assert client.get("/health").status_code == 200
        # a route in front of the old one, so the route indices all move
        config.write_text(
            '[app]\ntarget = "admin_app:app"\n\n'
            '[[routes]]\npath = "/new/"\nreturn = { body = "new" }\n\n'
            '[[routes]]\npath = "/health"\nmatch = "exact"\nreturn = { body = "fine" }\n\n'
        )
        mark = len(server.log)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload complete" in server.log[mark:], 20), server.log
        with httpx.Client(base_url=server.url, timeout=5) as client:
            for _ in range(4):
                assert client.get("/new/x").status_code == 200
            for _ in range(2):
                assert client.get("/health").status_code == 200
            assert client.get("/elsewhere").status_code == 404

        def counted() -> bool:
            found = metrics(admin)
            return sum(v for (n, _), v in found.items() if n == "bastion_http_requests_total") == 10

        assert wait_until(counted, 20), metrics(admin)
        found = metrics(admin)

    def requests(route: str, status: str) -> float:
        return sample(
            found, "bastion_http_requests_total", route=route, method="GET", status=status
        )

    assert requests("/new/", "2xx") == 4
    assert requests("/health", "2xx") == 3 + 2  # before and after the reload, one line
    assert requests("unmatched", "4xx") == 1
    assert sample(found, "bastion_http_request_duration_seconds_count", route="/new/") == 4
    routes = {dict(labels).get("route") for (_, labels) in found}
    assert "other" not in routes and "" not in routes


def test_tls_handshakes_are_counted(tmp_path: Path) -> None:
    """Each TLS connection is counted once, where the protocol sees its handshake done."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "c.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    tls = ("--certfile", str(tmp_path / "c.crt"), "--keyfile", str(tmp_path / "c.key"))
    with serve("admin_app:app", "--workers", "1", *ADMIN, *tls) as server:
        admin = admin_url(server)
        url = server.url.replace("http://", "https://")
        for _ in range(3):  # three connections, two requests on each
            with httpx.Client(base_url=url, verify=ctx, timeout=5) as client:
                assert client.get("/").status_code == 200
                assert client.get("/").status_code == 200
        assert wait_until(lambda: sample(metrics(admin), "bastion_tls_handshakes_total") == 3)
        time.sleep(1.2)  # and no more than that
        found = metrics(admin)
        assert sample(found, "bastion_tls_handshakes_total") == 3
        assert sample(found, "bastion_http_requests_total", **GET_2XX) == 6


def test_stack_dumps_show_a_blocked_worker() -> None:
    """/debug/stacks: every process's Python stacks, taken while a worker is stuck in
    the app's blocked_here(); the supervisor's too; behind the token like the rest."""
    with serve(
        "admin_app:app",
        "--workers",
        "2",
        "--timeout",
        "5",
        *ADMIN,
        env={"BASTION_ADMIN__TOKEN": "s3cret"},
    ) as server:
        admin = admin_url(server)
        auth = {"Authorization": "Bearer s3cret"}
        assert httpx.get(admin + "/debug/stacks", timeout=5).status_code == 401
        host, port = server.host_port
        with socket.create_connection((host, port), timeout=5) as stuck:
            stuck.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)
            r = httpx.get(admin + "/debug/stacks", headers=auth, timeout=10)
            assert r.status_code == 200
            text = r.text
        sections = text.split("=== ")[1:]
        assert len(sections) == 3, text  # the supervisor and two workers
        assert sections[0].startswith("supervisor (pid ")
        blocked = [s for s in sections if "in blocked_here" in s]
        assert len(blocked) == 1, text
        assert blocked[0].startswith("worker ")
        assert 'admin_app.py", line' in blocked[0]
        for section in sections:
            assert "Current thread" in section or "Thread 0x" in section, text
