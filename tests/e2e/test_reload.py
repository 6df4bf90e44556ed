"""--reload: a change to the code on disk reaches the workers without a restart."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from proc_tools import child_pids, get, wait_until
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


def test_reload_with_preload_is_refused() -> None:
    srv = serve("proc_app:app", "--reload", "--preload", wait_ready=False)
    with srv:
        assert srv.wait(15) == 2
        wait_until(lambda: "cannot load new code while workers.preload is on" in srv.log, 5)
