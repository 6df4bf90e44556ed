"""SIGUSR1 (reopen the log files), SIGUSR2 (upgrade bastion in place) and the signals
bastion must survive, sent to the real supervisor."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

from proc_tools import KeepAliveLoad, Load, assert_no_failures, child_pids, get, wait_until
from server import APPS, BastionProcess, serve

LOGGING_APP = """
import logging, os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/log":
        logging.getLogger("myapp").warning("app line from worker %d", os.getpid())
    if scope["path"] == "/slow":
        import asyncio
        await asyncio.sleep(3)
        logging.getLogger("myapp").warning("slow line from worker %d", os.getpid())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok %d" % os.getpid()})
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_pid(pid: int) -> None:
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not _alive(pid), 20, f"pid {pid} to stop")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)


def _logging_to_files(tmp_path: Path, workers: int) -> tuple[list[str], Path, Path]:
    """``bastion serve`` arguments for the logging app with its error and access logs
    in files (logrotate's case); the arguments and the two files."""
    (tmp_path / "logging_app.py").write_text(LOGGING_APP)
    error_log = tmp_path / "error.log"
    access_log = tmp_path / "access.log"
    args = ["serve", "logging_app:app", "--workers", str(workers), "--bind", "127.0.0.1:0"]
    args += ["--error-log-file", str(error_log), "--access-log", "json"]
    args += ["--access-log-file", str(access_log)]
    return args, error_log, access_log


def _url_once_ready(error_log: Path) -> str:
    wait_until(lambda: error_log.exists() and " ready: " in error_log.read_text(), 20)
    return re.findall(r"listening on (http://\S+)", error_log.read_text())[0]


def test_sigusr1_reopens_the_log_files_of_the_supervisor_and_workers(tmp_path: Path) -> None:
    args, error_log, access_log = _logging_to_files(tmp_path, 2)
    with BastionProcess(args, cwd=tmp_path, wait_ready=False) as srv:
        url = _url_once_ready(error_log)
        assert get(url, "/log")[0] == 200
        wait_until(lambda: access_log.exists() and access_log.read_text().count("\n") == 1, 10)
        # logrotate: rename, then SIGUSR1
        error_log.rename(tmp_path / "error.log.1")
        access_log.rename(tmp_path / "access.log.1")
        srv.signal(signal.SIGUSR1)
        wait_until(error_log.exists, 10, "a new error log")
        assert "SIGUSR1 received" in error_log.read_text()
        time.sleep(0.5)  # the workers get their SIGHUP
        for _ in range(6):  # both workers answer some of these
            assert get(url, "/log")[0] == 200
        wait_until(lambda: access_log.exists() and access_log.read_text().count("\n") == 6, 10)
        wait_until(lambda: error_log.read_text().count("app line from worker") == 6, 10)
        assert (tmp_path / "access.log.1").read_text().count("\n") == 1
        old = (tmp_path / "error.log.1").read_text()
        assert old.count("app line from worker") == 1
        assert srv.proc is not None and srv.proc.poll() is None
        assert srv.stop() == 0
        assert "bastion stopped" in error_log.read_text()


def test_sigusr1_reaches_a_worker_finishing_its_requests_after_a_reload(tmp_path: Path) -> None:
    import threading

    args, error_log, access_log = _logging_to_files(tmp_path, 1)
    with BastionProcess(args, cwd=tmp_path, wait_ready=False) as srv:
        url = _url_once_ready(error_log)
        slow: list[int] = []
        request = threading.Thread(target=lambda: slow.append(get(url, "/slow")[0]))
        request.start()
        time.sleep(0.5)  # the request is in the worker
        srv.signal(signal.SIGHUP)  # the worker is replaced and finishes it while retiring
        wait_until(lambda: "(reloaded)" in error_log.read_text(), 10, "the old worker retiring")
        error_log.rename(tmp_path / "error.log.1")
        access_log.rename(tmp_path / "access.log.1")
        srv.signal(signal.SIGUSR1)
        request.join(10)
        assert slow == [200]
        wait_until(lambda: error_log.exists() and "slow line" in error_log.read_text(), 10)
        wait_until(lambda: access_log.exists() and "/slow" in access_log.read_text(), 10)
        assert "/slow" not in (tmp_path / "access.log.1").read_text()
        assert srv.stop() == 0


def test_signals_a_process_manager_may_send_do_not_stop_bastion() -> None:
    stray = [signal.SIGALRM, signal.SIGPROF, signal.SIGVTALRM, signal.SIGIO, signal.SIGPWR]
    stray += [signal.SIGXCPU, signal.SIGRTMIN + 2, signal.SIGUSR1]
    with serve("proc_app:app", "--workers", "2") as srv:
        workers = child_pids(srv.pid)
        for sig in stray:
            srv.signal(sig)
            for pid in workers:  # a signal to the whole process group reaches them too
                if sig != signal.SIGUSR1:  # (a worker dumps its stacks on SIGUSR1)
                    os.kill(pid, sig)
            os.kill(next(iter(workers)), signal.SIGHUP)
        srv.wait_for_log(r"SIGXCPU received: ignored", 10)
        srv.wait_for_log(r"SIGUSR1 received", 10)
        time.sleep(0.5)
        assert srv.proc is not None and srv.proc.poll() is None
        assert child_pids(srv.pid) == workers
        assert get(srv.url)[0] == 200
        assert srv.stop() == 0


def test_sigusr2_upgrades_bastion_in_place_without_failing_a_request(tmp_path: Path) -> None:
    app = tmp_path / "proc_upgraded.py"
    shutil.copy(APPS / "proc_app.py", app)
    app.write_text(app.read_text().replace('body = f"ok {', 'body = f"v1 ok {'))
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    new_pid = 0
    pidfile = tmp_path / "bastion.pid"
    args = ("proc_upgraded:app", "--workers", "2", "--pidfile", str(pidfile))
    with serve(*args, cwd=tmp_path, env=env) as srv:
        assert pidfile.read_text() == f"{srv.pid}\n"
        try:
            old_workers = child_pids(srv.pid)
            with KeepAliveLoad(srv.url, threads=6) as kept, Load(srv.url, threads=2) as fresh:
                wait_until(lambda: kept.count() > 200 and fresh.count() > 20, 10, "load")
                app.write_text(app.read_text().replace('"v1 ok {', '"v2 ok {'))
                mark = len(srv.log)
                srv.signal(signal.SIGUSR2)
                found = srv.wait_for_log(r"started a new bastion \(pid (\d+)\)", 10, start=mark)
                new_pid = int(found.group(1))
                srv.wait_for_log(r"upgrade complete", 30, start=mark)
                # the old supervisor drains its workers and leaves with status 0; the
                # pid file names the new one
                assert srv.wait(20) == 0
                assert pidfile.read_text() == f"{new_pid}\n"
                wait_until(lambda: not any(_alive(p) for p in old_workers), 10, "old workers")
                seen = kept.count()
                wait_until(lambda: kept.count() > seen + 200, 10, "load on the new bastion")
            assert_no_failures(kept)
            assert_no_failures(fresh)
            assert any(b.startswith("v1 ") for b in kept.bodies)
            assert any(b.startswith("v2 ") for b in kept.bodies)
            # same address, new code, new supervisor
            assert get(srv.url)[1].startswith("v2 ok ")
            assert len(child_pids(new_pid)) == 2
            assert f"ready: serving proc_upgraded:app (ASGI) with 2 workers, pid {new_pid}" in (
                srv.log
            )
        finally:
            if new_pid:
                _stop_pid(new_pid)
    assert "bastion stopped" in srv.log
    assert not pidfile.exists()


def test_sigusr2_with_an_app_that_fails_keeps_the_old_bastion(tmp_path: Path) -> None:
    app = tmp_path / "proc_upbreak.py"
    shutil.copy(APPS / "proc_app.py", app)
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    with serve("proc_upbreak:app", "--workers", "1", cwd=tmp_path, env=env) as srv:
        workers = child_pids(srv.pid)
        app.write_text(app.read_text() + "\nraise ImportError('proc_upbreak: half-deployed')\n")
        with Load(srv.url, threads=2) as load:
            mark = len(srv.log)
            srv.signal(signal.SIGUSR2)
            srv.wait_for_log(r"proc_upbreak: half-deployed", 20, start=mark)
            srv.wait_for_log(r"upgrade failed: the new bastion \(pid \d+\) exited with", 10)
            seen = load.count()
            wait_until(lambda: load.count() > seen + 20, 10, "load after the failed upgrade")
        assert_no_failures(load)
        assert child_pids(srv.pid) == workers
        assert srv.proc is not None and srv.proc.poll() is None
        # a second attempt is possible once the code is fixed
        app.write_text(app.read_text().replace("raise ImportError", "# raise ImportError"))
        assert srv.stop() == 0


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sigusr2_with_an_admin_listener_on_a_fixed_port(tmp_path: Path) -> None:
    """The new bastion inherits the admin socket: the admin answers all along, and one
    bastion at a time answers there (the old one until the new one takes over): a
    readiness probe never sees the new one starting nor the old one draining, and the
    metrics never go back to the old bastion's once the new one's appeared."""
    import threading
    import urllib.error
    import urllib.request

    port = _free_port()
    new_pid = 0
    answers: list[int] = []
    starts: list[str] = []
    failures: list[str] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    answers.append(r.status)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                found = re.search(r"^bastion_start_time_seconds (\S+)$", text, re.M)
                if found and (not starts or starts[-1] != found.group(1)):
                    starts.append(found.group(1))
            except urllib.error.HTTPError as exc:
                answers.append(exc.code)
            except Exception as exc:  # counted, not raised
                failures.append(repr(exc))
            time.sleep(0.01)

    with serve("proc_app:app", "--workers", "1", "--admin", f"127.0.0.1:{port}") as srv:
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        try:
            wait_until(lambda: len(answers) > 5, 10, "the admin to answer")
            mark = len(srv.log)
            srv.signal(signal.SIGUSR2)
            found = srv.wait_for_log(r"started a new bastion \(pid (\d+)\)", 10, start=mark)
            new_pid = int(found.group(1))
            srv.wait_for_log(r"upgrade complete", 30, start=mark)
            assert srv.wait(20) == 0
            seen = len(answers)
            wait_until(lambda: len(answers) > seen + 5, 10, "the new admin to answer")
            done.set()
            prober.join(10)
            assert not failures, failures[:3]
            assert set(answers) == {200}, answers
            assert len(starts) <= 2, starts  # the old bastion's, then the new one's
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5) as r:
                assert r.status == 200
        finally:
            done.set()
            if new_pid:
                _stop_pid(new_pid)


def test_a_second_bastion_on_a_taken_admin_port_fails_at_start() -> None:
    port = _free_port()
    with serve("proc_app:app", "--workers", "1", "--admin", f"127.0.0.1:{port}") as first:
        args = ["serve", "proc_app:app", "--bind", "127.0.0.1:0", "--workers", "1"]
        second = BastionProcess([*args, "--admin", f"127.0.0.1:{port}"], wait_ready=False)
        second.start()
        try:
            assert second.wait(20) != 0
        finally:
            second.stop()
        assert f"admin.bind: cannot listen on 127.0.0.1:{port}" in second.log, second.log
        assert "in use" in second.log
        assert get(first.url)[0] == 200


def test_sigterm_while_the_new_bastion_starts_stops_both(tmp_path: Path) -> None:
    """An operator's stop during an upgrade is a stop, not the handover: the new bastion
    (still importing the app) is stopped too, and nothing serves on afterwards."""
    app = tmp_path / "proc_slowup.py"
    slow = tmp_path / "slow"
    app.write_text(
        "import os, time\n"
        f"if os.path.exists({str(slow)!r}):\n    time.sleep(4)\n"
        + (APPS / "proc_app.py").read_text()
    )
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    new_pid = 0
    with serve("proc_slowup:app", "--workers", "1", cwd=tmp_path, env=env) as srv:
        try:
            slow.write_text("")
            mark = len(srv.log)
            srv.signal(signal.SIGUSR2)
            found = srv.wait_for_log(r"started a new bastion \(pid (\d+)\)", 10, start=mark)
            new_pid = int(found.group(1))
            time.sleep(0.5)  # the new one is importing the app
            srv.signal(signal.SIGTERM)
            assert srv.wait(20) == 0
            wait_until(lambda: not _alive(new_pid), 15, "the new bastion to stop too")
            assert "received during an upgrade: stopping" in srv.log
            assert "handing over" not in srv.log
            try:
                get(srv.url)
            except OSError:
                pass
            else:
                raise AssertionError("something still serves after the stop")
        finally:
            if new_pid:
                _stop_pid(new_pid)


def test_sigusr2_while_draining_is_ignored() -> None:
    env = {"BASTION_WORKERS__DRAIN_DELAY": "2"}
    with serve("proc_app:app", "--workers", "1", env=env) as srv:
        srv.signal(signal.SIGTERM)
        srv.wait_for_log(r"not ready, serving 2s more", 10)
        srv.signal(signal.SIGUSR2)  # a stop under way is not undone by an upgrade
        srv.wait_for_log(r"SIGUSR2 received while draining: ignored", 10)
        assert srv.wait(20) == 0
        assert "started a new bastion" not in srv.log
