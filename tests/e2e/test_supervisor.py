"""The supervisor keeps the real ``bastion`` serving: it replaces workers that die or
hang, recycles them after ``max_requests``, preloads the app when asked, writes the
access log, and refuses to start (with the app's own message) when the app is broken.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from proc_tools import Load, assert_no_failures, child_pids, get, pid_of, wait_until
from server import BastionProcess, serve


def test_killed_worker_is_replaced() -> None:
    with serve("proc_app:app", "--workers", "2") as srv:
        before = child_pids(srv.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        srv.wait_for_log(rf"worker {victim} was killed by SIGKILL", 10)
        wait_until(
            lambda: len(child_pids(srv.pid)) == 2 and victim not in child_pids(srv.pid),
            10,
            "a replacement worker",
        )
        for _ in range(10):
            status, body = get(srv.url)
            assert status == 200 and pid_of(body) != victim
        assert srv.stop() == 0


def test_worker_that_keeps_crashing_is_restarted_with_growing_delays() -> None:
    with serve("proc_app:app", "--workers", "1") as srv:
        delays = []
        for _ in range(3):
            (victim,) = child_pids(srv.pid)
            mark = len(srv.log)
            os.kill(victim, signal.SIGKILL)
            m = srv.wait_for_log(r"starting a new worker in ([\d.]+)s", 10, start=mark)
            delays.append(float(m.group(1)))
            wait_until(
                lambda v=victim: (p := child_pids(srv.pid)) and v not in p, 10, "replacement"
            )
            wait_until(lambda: get(srv.url)[0] == 200, 10, "serving again")
        assert delays == sorted(delays) and delays[-1] > delays[0]


def test_blocked_worker_is_killed_with_its_stack_in_the_log() -> None:
    with serve("proc_app:app", "--workers", "2", "--timeout", "2") as srv:
        before = child_pids(srv.pid)
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - the worker dies mid-request
            get(srv.url, "/block", timeout=15)
        srv.wait_for_log(r"worker (\d+) timed out \(event loop blocked > 2s\)", 5)
        assert time.monotonic() - started < 8
        # faulthandler's dump names the app function that blocked the loop
        srv.wait_for_log(r"in block_the_loop_forever", 5)
        m = re.search(r"worker (\d+) timed out", srv.log)
        assert m is not None
        hung = int(m.group(1))
        assert hung in before
        srv.wait_for_log(rf"worker {hung} was killed by SIGKILL", 5)
        wait_until(lambda: len(child_pids(srv.pid)) == 2 and hung not in child_pids(srv.pid), 10)
        assert get(srv.url)[0] == 200
        # healthy workers are left alone
        time.sleep(2.5)
        assert srv.log.count("timed out") == 1


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("proc_badimport:app", "proc_badimport: DATABASE_URL is not set"),
        ("proc_badlifespan:app", "cache warm-up failed: no redis"),
        ("proc_missing_module:app", "proc_missing_module"),
    ],
)
def test_app_that_cannot_start_stops_bastion_with_its_message(app: str, message: str) -> None:
    started = time.monotonic()
    srv = serve(app, "--workers", "3", wait_ready=False).start()
    try:
        assert srv.wait(15) == 1
    finally:
        srv.stop()
    assert time.monotonic() - started < 10
    assert message in srv.log
    assert "ready" not in srv.log.replace("already", "")
    assert "starting a new worker" not in srv.log, "no restart loop"


def test_max_requests_recycles_workers_without_failing_requests() -> None:
    with serve(
        "proc_app:app", "--workers", "2", "--max-requests", "20", "--max-requests-jitter", "5"
    ) as srv:
        first = child_pids(srv.pid)
        with Load(srv.url, threads=4) as load:
            wait_until(lambda: srv.log.count("reached max_requests") >= 4, 30, "recycling")
            wait_until(lambda: load.count() > 200, 30, "200 requests")
        assert_no_failures(load)
        pids = {pid_of(b) for b in load.bodies}
        assert len(pids) >= 4
        wait_until(
            lambda: len(p := child_pids(srv.pid)) == 2 and not p & first,
            15,
            "two new workers",
        )
        assert srv.stop() == 0


def test_preload_imports_the_app_once_in_the_supervisor() -> None:
    with serve("proc_app:app", "--workers", "2", "--preload") as srv:
        imports = re.findall(r"proc_app imported in pid (\d+)", srv.log)
        assert imports == [str(srv.pid)]
        status, body = get(srv.url, "/imported")
        assert status == 200 and body == str(srv.pid)
        # a reload forks again from the preloaded app: no new import
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_for_log("reload complete", 20, start=mark)
        assert "imported in pid" not in srv.log[mark:]
        assert get(srv.url)[0] == 200
        assert srv.stop() == 0


def test_preload_import_failure_exits_with_the_message() -> None:
    srv = serve("proc_badimport:app", "--preload", wait_ready=False).start()
    try:
        assert srv.wait(15) == 1
    finally:
        srv.stop()
    assert "proc_badimport: DATABASE_URL is not set" in srv.log


def test_access_log_combined() -> None:
    with serve("proc_app:app", "--workers", "1", "--access-log", "combined") as srv:
        _get_with_headers(srv.url, "/slow?s=0.01")
        m = srv.wait_for_log(
            r'127\.0\.0\.1 - - \[[^\]]+\] "GET /slow\?s=0\.01 HTTP/1\.1" 200 \d+ '
            r'"http://example\.test/from" "proc-test/1\.0" "[0-9a-f]{17,}"\n',
            10,
        )
        assert m
        stamp = re.search(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\]", m.group(0))
        assert stamp
        # a quote in a header cannot end the quoted field early
        _get_with_headers(srv.url, "/", agent='evil" 200 0 "x')
        srv.wait_for_log(r'"GET / HTTP/1\.1" 200 \d+ "[^"]*" "evil\\x22 200 0 \\x22x" "\w+"\n', 10)
        # the request id is the last quoted field: the client's X-Request-ID, escaped
        _get_with_headers(srv.url, "/?id", request_id='req-7 "x"')
        srv.wait_for_log(r'"GET /\?id HTTP/1\.1" 200 \d+ "[^"]*" "[^"]*" "req-7 \\x22x\\x22"\n', 10)


def test_access_log_json() -> None:
    with serve("proc_app:app", "--workers", "1", "--access-log", "json") as srv:
        _get_with_headers(srv.url, "/slow?s=0.01")
        m = srv.wait_for_log(r'\{"time".*"proc-test/1\.0".*\}\n', 10)
        record = json.loads(m.group(0))
        assert datetime.fromisoformat(record["time"]).tzinfo is not None
        assert record["method"] == "GET"
        assert record["path"] == "/slow"
        assert record["query"] == "s=0.01"
        assert record["status"] == 200
        assert record["http_version"] == "1.1"
        assert record["client"] == "127.0.0.1"
        assert record["referer"] == "http://example.test/from"
        assert record["user_agent"] == "proc-test/1.0"
        assert record["bytes"] == len(f"slow {record['pid']}")
        assert record["pid"] in child_pids(srv.pid)
        assert record["duration_ms"] >= 10


def test_access_log_off_writes_nothing() -> None:
    with serve("proc_app:app", "--workers", "1") as srv:
        _get_with_headers(srv.url, "/")
        time.sleep(0.3)
        assert "proc-test/1.0" not in srv.log


def _get_with_headers(
    url: str, path: str, agent: str = "proc-test/1.0", request_id: str = ""
) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(
            "GET",
            path,
            headers={
                "User-Agent": agent,
                "Referer": "http://example.test/from",
                **({"X-Request-ID": request_id} if request_id else {}),
            },
        )
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    finally:
        conn.close()


def test_supervisor_death_does_not_leave_orphan_workers() -> None:
    srv = serve("proc_app:app", "--workers", "2").start()
    try:
        workers = child_pids(srv.pid)
        os.kill(srv.pid, signal.SIGKILL)
        srv.wait(5)

        def gone() -> bool:
            return not any(os.path.exists(f"/proc/{p}") and _alive(p) for p in workers)

        wait_until(gone, 15, "the orphaned workers to stop")
    finally:
        srv.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_workers_not_ready_within_startup_timeout_stop_bastion() -> None:
    env = {"BASTION_WORKERS__STARTUP_TIMEOUT": "1.5", "PROC_IMPORT_SECONDS": "30"}
    started = time.monotonic()
    srv = serve("proc_slowimport:app", "--workers", "2", env=env, wait_ready=False).start()
    try:
        assert srv.wait(15) == 1
    finally:
        srv.stop()
    assert time.monotonic() - started < 8
    assert "workers did not start within 1.5s (workers.startup_timeout)" in srv.log


def test_wsgi_app_is_announced_and_served() -> None:
    with serve("proc_wsgi:app", "--workers", "2") as srv:
        assert re.search(r"ready: serving proc_wsgi:app \(WSGI\) with 2 workers, pid \d+", srv.log)
        status, body = get(srv.url)
        assert status == 200 and pid_of(body) in child_pids(srv.pid)


def test_error_log_and_access_log_files(tmp_path: Path) -> None:
    error_log = tmp_path / "error.log"
    access_log = tmp_path / "access.log"
    args = [
        "proc_app:app",
        "--workers",
        "1",
        "--timeout",
        "2",
        "--error-log-file",
        str(error_log),
        "--access-log",
        "combined",
        "--access-log-file",
        str(access_log),
    ]
    srv = BastionProcess(["serve", *args, "--bind", "127.0.0.1:0"], wait_ready=False).start()
    try:
        wait_until(lambda: error_log.exists() and "ready" in error_log.read_text(), 15)
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", error_log.read_text())
        assert port
        url = f"http://127.0.0.1:{port.group(1)}"
        _get_with_headers(url, "/")
        wait_until(lambda: access_log.exists() and "proc-test/1.0" in access_log.read_text(), 10)
        assert re.search(r'"GET / HTTP/1\.1" 200 \d+ ', access_log.read_text())
        # the blocked worker's stack goes to the error log file too
        with pytest.raises(Exception):  # noqa: B017 - the worker dies mid-request
            get(url, "/block", timeout=15)
        wait_until(lambda: "in block_the_loop_forever" in error_log.read_text(), 10)
        assert "timed out (event loop blocked > 2s)" in error_log.read_text()
        srv.signal(signal.SIGTERM)
        assert srv.wait(15) == 0
    finally:
        srv.stop()
    text = error_log.read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[\d+\] INFO bastion stopped$", text, re.M)
    assert "proc-test/1.0" not in srv.log  # nothing went to stdout
