"""--reload: a change to the code on disk reaches the workers without a restart."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from proc_tools import child_pids, free_port, get, wait_until
from server import APPS, serve


def test_reload_serves_the_edited_code(tmp_path: Path) -> None:
    app = tmp_path / "proc_edited.py"
    shutil.copy(APPS / "proc_app.py", app)
    app.write_text(app.read_text().replace('body = f"ok {', 'body = f"first {'))
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    with serve("proc_edited:app", "--workers", "2", "--reload", cwd=tmp_path, env=env) as srv:
        srv.wait_for_log(r"watching \. for changes \(--reload\)", 10)
        assert get(srv.url)[1].startswith("first ")
        app.write_text(app.read_text().replace('"first {', '"second {'))
        srv.wait_for_log(r"proc_edited\.py changed: reloading", 10)
        wait_until(lambda: get(srv.url)[1].startswith("second "), 20, "the new code")
        srv.wait_for_log(r"reload complete", 20)
        # a change that does not import leaves the last good code serving
        mark = len(srv.log)
        app.write_text(app.read_text() + "\nthis is not python\n")
        srv.wait_for_log(r"reload failed", 20, start=mark)
        assert get(srv.url)[1].startswith("second ")
        # a closing terminal's SIGHUP reaches every process of the group: a reload, and
        # the file watcher must live on
        mark = len(srv.log)
        os.kill(srv.pid, signal.SIGHUP)
        for pid in child_pids(srv.pid):
            with contextlib.suppress(ProcessLookupError):  # (a child may end meanwhile)
                os.kill(pid, signal.SIGHUP)
        srv.wait_for_log(r"reload (complete|failed)", 20, start=mark)
        # fixed again: served
        app.write_text(
            app.read_text().replace("this is not python", "").replace('"second {', '"third {')
        )
        wait_until(lambda: get(srv.url)[1].startswith("third "), 20, "the fixed code")
        assert srv.stop() == 0
    assert "--reload: the file watcher" not in srv.log


def test_reload_waits_for_a_fix_when_the_app_is_broken_at_start(tmp_path: Path) -> None:
    """As a development server does: an app that does not import at the first start is
    reported with its own error, and bastion waits for the code to change instead of
    stopping; once fixed, it serves."""
    app = tmp_path / "proc_broken.py"
    good = (APPS / "proc_app.py").read_text()
    app.write_text(good + "\ndef broken(:\n")
    port = free_port()
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    srv = serve(
        "proc_broken:app",
        "--workers",
        "2",
        "--reload",
        "--bind",
        f"127.0.0.1:{port}",
        cwd=tmp_path,
        env=env,
        wait_ready=False,
    )
    with srv:
        srv.wait_for_log(r"--reload: waiting for a change to the code", 20)
        assert "SyntaxError" in srv.log
        assert srv.proc is not None and srv.proc.poll() is None
        # nothing is started again until the code changes
        mark = len(srv.log)
        time.sleep(1.5)
        assert "could not start" not in srv.log[mark:]
        # a change that is still broken: reported, and it waits again
        app.write_text(good + "\nraise RuntimeError('still broken')\n")
        srv.wait_for_log(r"still broken", 20, start=mark)
        srv.wait_for_log(r"--reload: waiting for a change", 20, start=mark)
        app.write_text(good.replace('body = f"ok {', 'body = f"fixed {'))
        wait_until(
            lambda: get(f"http://127.0.0.1:{port}")[1].startswith("fixed "), 20, "the fixed code"
        )
        assert srv.stop() == 0


def test_a_fix_saved_while_a_start_is_under_way_is_not_missed(tmp_path: Path) -> None:
    """The code changes while the workers of a start import (a slow import that will
    fail): when that start fails, the next begins at once on the code now on disk."""
    app = tmp_path / "proc_slow.py"
    good = (APPS / "proc_app.py").read_text()
    app.write_text(good + "\nraise RuntimeError('broken v1')\n")
    port = free_port()
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    args = ["proc_slow:app", "--workers", "1", "--reload", "--bind", f"127.0.0.1:{port}"]
    with serve(*args, cwd=tmp_path, env=env, wait_ready=False) as srv:
        srv.wait_for_log(r"--reload: waiting for a change to the code", 20)
        srv.wait_for_log(r"watching \. for changes", 10)
        mark = len(srv.log)
        app.write_text(good + "\nimport time\ntime.sleep(2)\nraise RuntimeError('broken v2')\n")
        srv.wait_for_log(r"starting the workers again", 10, start=mark)
        time.sleep(0.5)  # (the worker is importing the slow version)
        app.write_text(good.replace('body = f"ok {', 'body = f"fixed {'))
        wait_until(
            lambda: get(f"http://127.0.0.1:{port}")[1].startswith("fixed "), 25, "the fixed code"
        )
        assert srv.stop() == 0


def test_a_start_that_fails_in_one_worker_of_two_waits_then_serves(tmp_path: Path) -> None:
    """One worker starts and another does not (an app that starts only once): the one
    that started is stopped too, and bastion waits for the code to change rather than
    sit half-started; fixed, both serve, and a worker that dies then is replaced."""
    app = tmp_path / "proc_once.py"
    lock = tmp_path / "started"
    good = (APPS / "proc_app.py").read_text()
    app.write_text(
        good + f"\nimport os as _os\n_os.close(_os.open({str(lock)!r}, _os.O_CREAT | _os.O_EXCL))\n"
    )
    port = free_port()
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    args = ["proc_once:app", "--workers", "2", "--reload", "--bind", f"127.0.0.1:{port}"]
    with serve(*args, cwd=tmp_path, env=env, wait_ready=False) as srv:
        srv.wait_for_log(r"--reload: waiting for a change to the code", 20)
        srv.wait_for_log(r"watching \. for changes", 10)
        wait_until(lambda: len(child_pids(srv.pid)) <= 1, 10, "the started worker to stop")
        app.write_text(good)
        wait_until(lambda: get(f"http://127.0.0.1:{port}")[0] == 200, 20, "the fixed code")
        srv.wait_for_log(r"ready: serving proc_once:app \(ASGI\) with 2 workers", 10)
        workers = [p for p in child_pids(srv.pid) if p != srv.pid]
        serving = {int(get(f"http://127.0.0.1:{port}")[1].split()[1]) for _ in range(20)}
        victim = next(iter(serving))
        os.kill(victim, signal.SIGKILL)
        srv.wait_for_log(rf"worker {victim} was killed by SIGKILL unexpectedly", 10)
        wait_until(lambda: get(f"http://127.0.0.1:{port}")[0] == 200, 10, "a worker")
        assert srv.proc is not None and srv.proc.poll() is None, workers
        assert srv.stop() == 0


def test_reload_with_preload_is_refused() -> None:
    srv = serve("proc_app:app", "--reload", "--preload", wait_ready=False)
    with srv:
        assert srv.wait(15) == 2
        wait_until(lambda: "cannot load new code while workers.preload is on" in srv.log, 5)
