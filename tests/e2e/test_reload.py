"""--reload: a change to the code on disk reaches the workers without a restart."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

from proc_tools import child_pids, get, wait_until
from server import APPS, serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        for pid in [srv.pid, *child_pids(srv.pid)]:
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


def test_reload_with_preload_is_refused() -> None:
    srv = serve("proc_app:app", "--reload", "--preload", wait_ready=False)
    with srv:
        assert srv.wait(15) == 2
        wait_until(lambda: "cannot load new code while workers.preload is on" in srv.log, 5)
