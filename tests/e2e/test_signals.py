"""Signals sent to the real ``bastion`` supervisor, under real load.

SIGTERM drains in-flight requests, SIGHUP swaps every worker for one running the code
now on disk without failing a request, SIGTTIN/SIGTTOU change the number of workers,
SIGQUIT and a second SIGINT stop at once.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

from proc_tools import (
    KeepAliveLoad,
    Load,
    assert_no_failures,
    child_pids,
    get,
    pid_of,
    wait_until,
)
from server import APPS, BastionProcess, serve


def test_sigterm_lets_every_in_flight_request_finish() -> None:
    with serve("proc_app:app", "--workers", "2", "--graceful-timeout", "15") as srv:
        results: list[object] = []
        lock = threading.Lock()

        def slow() -> None:
            try:
                answer: object = get(srv.url, "/slow?s=1.5", timeout=20)
            except Exception as exc:
                answer = exc
            with lock:
                results.append(answer)

        threads = [threading.Thread(target=slow) for _ in range(20)]
        for t in threads:
            t.start()
        wait_until(lambda: srv.log.count("slow request started") >= 20, 10, "20 requests in flight")
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        for t in threads:
            t.join(20)
        assert srv.wait(20) == 0
        assert len(results) == 20
        bad = [r for r in results if not (isinstance(r, tuple) and r[0] == 200)]
        assert not bad, bad
        assert all(isinstance(r, tuple) and r[1].startswith("slow ") for r in results)
        # the requests were still running when the signal came, and nobody waited for
        # graceful_timeout: the workers left as soon as they were done
        assert time.monotonic() - started < 10
        assert srv.log.count("lifespan shutdown") == 2


def test_sigterm_stops_accepting_at_once_when_idle() -> None:
    with serve("proc_app:app", "--workers", "2") as srv:
        assert get(srv.url)[0] == 200
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait(15) == 0
        assert time.monotonic() - started < 5
        assert "stopping gracefully" in srv.log


def test_sighup_serves_new_code_without_failing_a_request(tmp_path: Path) -> None:
    app = tmp_path / "proc_reloaded.py"
    shutil.copy(APPS / "proc_app.py", app)
    app.write_text(app.read_text().replace('body = f"ok {', 'body = f"v1 ok {'))
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    with serve("proc_reloaded:app", "--workers", "2", cwd=tmp_path, env=env) as srv:
        before = child_pids(srv.pid)
        assert len(before) == 2
        assert get(srv.url)[1].startswith("v1 ok ")
        with Load(srv.url, threads=6) as load:
            wait_until(lambda: load.count() > 50, 10, "load to start")
            app.write_text(app.read_text().replace('"v1 ok {', '"version two ok {'))
            mark = len(srv.log)
            srv.signal(signal.SIGHUP)
            srv.wait_for_log(r"reload complete", 30, start=mark)
            seen = load.count()
            wait_until(lambda: load.count() > seen + 50, 10, "load after the reload")
            for _ in range(2):  # more swaps under load: still nothing lost
                mark = len(srv.log)
                srv.signal(signal.SIGHUP)
                srv.wait_for_log(r"reload complete", 30, start=mark)
        assert_no_failures(load)
        # the old workers finish their last requests and exit
        wait_until(lambda: len(child_pids(srv.pid)) == 2, 10, "two workers")
        assert not child_pids(srv.pid) & before, "every worker was replaced"
        assert get(srv.url)[1].startswith("version two ok ")
        # both versions answered during the run: the swap happened under load
        assert any(b.startswith("v1 ") for b in load.bodies)
        assert any(b.startswith("version two ") for b in load.bodies)
        assert srv.stop() == 0


def test_sighup_with_broken_code_keeps_the_old_workers(tmp_path: Path) -> None:
    app = tmp_path / "proc_breaks.py"
    shutil.copy(APPS / "proc_app.py", app)
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    with serve("proc_breaks:app", "--workers", "2", cwd=tmp_path, env=env) as srv:
        before = child_pids(srv.pid)
        app.write_text(app.read_text() + "\nraise ImportError('proc_breaks: half-deployed')\n")
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"proc_breaks: half-deployed", 20, start=mark)
        srv.wait_for_log(r"reload failed", 10, start=mark)
        wait_until(lambda: child_pids(srv.pid) == before, 10, "only the old workers left")
        status, body = get(srv.url)
        assert status == 200 and pid_of(body) in before
        assert srv.proc is not None and srv.proc.poll() is None


def test_a_failed_reload_keeps_the_configuration_too(tmp_path: Path) -> None:
    # more workers asked for with code that does not import: the reload fails, and the
    # supervisor does not go on starting workers that cannot start
    app = tmp_path / "proc_breaks2.py"
    shutil.copy(APPS / "proc_app.py", app)
    config = tmp_path / "bastion.toml"
    base = '[app]\ntarget = "proc_breaks2:app"\n[server]\nbind = ["127.0.0.1:0"]\n'
    config.write_text(base + "[workers]\ncount = 1\n")
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    with BastionProcess(["serve", "-c", str(config)], cwd=tmp_path, env=env) as srv:
        before = child_pids(srv.pid)
        app.write_text(app.read_text() + "\nraise ImportError('proc_breaks2: half-deployed')\n")
        config.write_text(base + "[workers]\ncount = 3\n")
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"reload failed: keeping the running workers", 20, start=mark)
        time.sleep(1)  # (a worker started beside the replacement fails too)
        failed = srv.log.count("could not start")
        time.sleep(4)  # then none is started again and again with the broken code
        assert srv.log.count("could not start") == failed, srv.log[mark:]
        assert "and their configuration" in srv.log[mark:]
        assert child_pids(srv.pid) == before
        assert get(srv.url)[0] == 200


def test_sighup_rereads_the_config_file_and_keeps_it_if_invalid(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(
        f'[app]\ntarget = "proc_app:app"\napp_dir = "{APPS}"\n'
        '[server]\nbind = ["127.0.0.1:0"]\n[workers]\ncount = 1\n'
    )
    with BastionProcess(["serve", "-c", str(config)]) as srv:
        assert len(child_pids(srv.pid)) == 1
        # a valid change: two workers after the reload
        config.write_text(config.read_text().replace("count = 1", "count = 2"))
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"reload complete", 20, start=mark)
        wait_until(lambda: len(child_pids(srv.pid)) == 2, 10, "two workers")
        # an invalid one: logged, the running configuration stays
        config.write_text(config.read_text().replace("count = 2", 'count = "many"'))
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"invalid, keeping the current one", 10, start=mark)
        srv.wait_for_log(r"workers\.count", 5, start=mark)
        assert get(srv.url)[0] == 200
        assert len(child_pids(srv.pid)) == 2
        assert srv.stop() == 0


def test_sigttin_and_sigttou_change_the_number_of_workers() -> None:
    with serve("proc_app:app", "--workers", "2") as srv:
        assert len(child_pids(srv.pid)) == 2
        srv.signal(signal.SIGTTIN)
        wait_until(lambda: len(child_pids(srv.pid)) == 3, 15, "3 workers")
        for _ in range(4):  # never below one
            srv.signal(signal.SIGTTOU)
            time.sleep(0.1)
        wait_until(lambda: len(child_pids(srv.pid)) == 1, 15, "1 worker")
        time.sleep(0.5)
        assert len(child_pids(srv.pid)) == 1
        assert get(srv.url)[0] == 200
        assert srv.stop() == 0


def test_sigquit_stops_at_once_even_with_requests_in_flight() -> None:
    with serve("proc_app:app", "--workers", "1", "--graceful-timeout", "30") as srv:
        failures: list[Exception] = []

        def slow() -> None:
            try:
                get(srv.url, "/slow?s=20", timeout=25)
            except Exception as exc:
                failures.append(exc)

        t = threading.Thread(target=slow)
        t.start()
        srv.wait_for_log("slow request started", 10)
        started = time.monotonic()
        srv.signal(signal.SIGQUIT)
        assert srv.wait(10) == 0
        assert time.monotonic() - started < 5
        t.join(10)
        assert failures, "the in-flight request was cut off"


def test_second_sigint_stops_at_once() -> None:
    with serve("proc_app:app", "--workers", "1", "--graceful-timeout", "30") as srv:
        t = threading.Thread(target=lambda: _ignore(get, srv.url, "/slow?s=20", timeout=25))
        t.start()
        srv.wait_for_log("slow request started", 10)
        started = time.monotonic()
        srv.signal(signal.SIGINT)
        srv.wait_for_log("stopping gracefully", 10)
        time.sleep(0.3)
        assert srv.proc is not None and srv.proc.poll() is None, "still draining"
        srv.signal(signal.SIGINT)
        assert srv.wait(10) == 0
        assert time.monotonic() - started < 8
        t.join(10)


def _ignore(fn: object, *args: object, **kw: object) -> None:
    try:
        fn(*args, **kw)  # type: ignore[operator]
    except Exception:
        pass


def test_sigterm_while_workers_are_starting_stops_at_once() -> None:
    env = {"PROC_IMPORT_SECONDS": "30"}
    srv = serve("proc_slowimport:app", "--workers", "2", env=env, wait_ready=False).start()
    try:
        wait_until(lambda: len(child_pids(srv.pid)) == 2, 10, "workers forked")
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        srv.stop()


def test_sighup_loses_no_request_on_keep_alive_connections() -> None:
    """Clients that reuse their connections and send the next request the moment the
    last answer is in: an old worker answers the request in flight with
    ``Connection: close`` and never closes a connection a request may be arriving on."""
    with serve("proc_app:app", "--workers", "2") as srv:
        with KeepAliveLoad(srv.url, threads=8) as load:
            wait_until(lambda: load.count() > 200, 10, "load to start")
            for _ in range(3):
                mark = len(srv.log)
                seen = load.count()
                srv.signal(signal.SIGHUP)
                srv.wait_for_log(r"reload complete", 30, start=mark)
                wait_until(lambda seen=seen: load.count() > seen + 200, 10, "load after the reload")
            # the retired workers have closed every connection they held
            wait_until(lambda: len(child_pids(srv.pid)) == 2, 15, "two workers")
            seen = load.count()
            wait_until(lambda: load.count() > seen + 100, 10, "load on the new workers")
        assert_no_failures(load)
        # the old workers told their clients to reconnect rather than dropping them
        assert load.reconnects >= 8
        assert srv.stop() == 0
