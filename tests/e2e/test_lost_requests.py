"""A worker that dies (crashed, killed, or blocked past workers.timeout) takes the
requests it was answering with it: the supervisor says how many."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import pytest
from proc_tools import child_pids, get, wait_until
from server import serve


def test_a_killed_worker_is_logged_with_the_requests_it_held() -> None:
    with serve("proc_app:app", "--workers", "1") as srv:
        (victim,) = child_pids(srv.pid)
        host, port = srv.host_port
        idle = [socket.create_connection((host, port)) for _ in range(2)]
        failures: list[object] = []

        def slow() -> None:
            try:
                get(srv.url, "/slow?s=20", timeout=30)
            except Exception as exc:  # the worker dies under it
                failures.append(exc)

        threads = [threading.Thread(target=slow) for _ in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: srv.log.count("slow request started") == 3, 10, "3 requests")
        time.sleep(1.5)  # a heartbeat that sees them
        os.kill(victim, signal.SIGKILL)
        srv.wait_for_log(
            rf"worker {victim} was killed by SIGKILL unexpectedly: it held 5 connections, "
            r"3 with a request in progress \(at its last heartbeat, [\d.]+s before\); "
            "those requests failed",
            10,
        )
        for t in threads:
            t.join(15)
        assert len(failures) == 3
        for s in idle:
            s.close()
        wait_until(lambda: get(srv.url)[0] == 200, 10, "a new worker")
        assert srv.stop() == 0


def test_a_blocked_worker_is_logged_with_the_request_that_blocked_it() -> None:
    with serve("proc_app:app", "--workers", "1", "--timeout", "2") as srv:
        (hung,) = child_pids(srv.pid)
        with pytest.raises(Exception):  # noqa: B017 - the worker dies mid-request
            get(srv.url, "/block", timeout=15)
        srv.wait_for_log(
            rf"worker {hung} was killed by SIGKILL: it held 1 connection, 1 with a request "
            r"in progress",
            10,
        )
        assert srv.stop() == 0
    # once: not again as a bare warning
    assert len(re.findall(rf"worker {hung} was killed by SIGKILL", srv.log)) == 1, srv.log
