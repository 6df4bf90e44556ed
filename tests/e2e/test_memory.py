"""workers.max_memory: a worker that leaks is replaced before it hurts, with no failed
request; a worker whose memory keeps growing is reported."""

from __future__ import annotations

import re
import threading

from admin_tools import admin_url, metrics, sample
from proc_tools import KeepAliveLoad, Load, assert_no_failures, child_pids, get, wait_until
from server import serve


def test_a_leaking_worker_is_recycled_with_no_failed_request() -> None:
    env = {"BASTION_WORKERS__MEMORY_CHECK_INTERVAL": "0.3"}
    args = ("proc_leak:app", "--workers", "2", "--max-memory", "120m", "--admin", "127.0.0.1:0")
    with serve(*args, env=env) as srv:
        first = child_pids(srv.pid)
        # every request leaks, on new connections and on kept-alive ones alike
        with Load(srv.url, "/leak", threads=2) as fresh, KeepAliveLoad(srv.url, "/leak") as kept:
            srv.wait_for_log(r"over workers\.max_memory \(120\.0 MiB\): replacing it", 30)
            srv.wait_for_log(r"stopping worker \d+ \(replaced\)", 20)
            seen = fresh.count() + kept.count()
            wait_until(lambda: fresh.count() + kept.count() > seen + 20, 10, "load after it")
        assert_no_failures(fresh)
        assert_no_failures(kept)
        m = re.search(r"worker (\d+) uses ([\d.]+) MiB \(PSS\)", srv.log)
        assert m is not None and float(m.group(2)) > 120
        assert int(m.group(1)) in first
        wait_until(lambda: int(m.group(1)) not in child_pids(srv.pid), 15, "the old worker")
        # counted, for the dashboard and alerts
        found = metrics(admin_url(srv))
        assert sample(found, "bastion_worker_restarts_total", cause="max_memory") >= 1
        assert srv.stop() == 0


def test_growing_memory_is_reported_without_a_limit() -> None:
    env = {"BASTION_WORKERS__MEMORY_CHECK_INTERVAL": "0.2"}
    with serve("proc_leak:app", "--workers", "1", env=env) as srv:
        for _ in range(60):
            assert get(srv.url, "/leak")[0] == 200
            if "grew at each" in srv.log:
                break
            threading.Event().wait(0.1)
        srv.wait_for_log(r"memory \(PSS\) grew at each of its last \d+ checks", 10)
        assert "workers.max_memory would recycle it" in srv.log
        assert srv.stop() == 0


def test_a_limit_below_a_fresh_worker_says_so() -> None:
    env = {"BASTION_WORKERS__MEMORY_CHECK_INTERVAL": "0.3"}
    with serve("proc_app:app", "--workers", "1", "--max-memory", "4m", env=env) as srv:
        srv.wait_for_log(r"workers\.max_memory is below what a fresh worker takes, raise it", 15)
        assert get(srv.url)[0] == 200
        assert srv.stop() == 0
