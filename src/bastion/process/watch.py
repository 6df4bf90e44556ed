"""``--reload``: a small process that watches the code and asks for a reload.

The supervisor starts it (``python -m bastion.process.watch PID DIR...``) when
``workers.reload`` is on. It waits for changes to Python files (and ``.toml`` files:
the configuration) under the directories with ``watchfiles``, and sends ``SIGHUP`` to
the supervisor, whose rolling reload starts workers on the new code: a change that does
not import is reported and the running workers go on serving. It runs apart from the
supervisor because the supervisor forks and must have no threads; it ends when the
supervisor does.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from bastion.observe.logging import DATE_FORMAT, FORMAT, logger
from bastion.process.children import describe_status


class Watcher:
    """The supervisor's side: the watching process it started, while it runs."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, dirs: list[str]) -> None:
        argv = [sys.executable, "-m", "bastion.process.watch", str(os.getpid()), *dirs]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        except OSError as exc:
            logger.error("--reload: cannot start the file watcher: %s", exc)

    def reaped(self, pid: int, status: int) -> bool:
        """Whether ``pid`` was the watcher; if so it ended with wait ``status``."""
        if self.proc is None or pid != self.proc.pid:
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.proc = None
        logger.error("--reload: the file watcher %s", describe_status(status))
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.kill()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired, ChildProcessError):
            pass
        proc.returncode = proc.returncode or 0


def main(argv: list[str]) -> int:
    try:
        import watchfiles
    except ImportError:
        print("bastion: --reload needs watchfiles: pip install 'bastion[reload]'", file=sys.stderr)
        return 1
    supervisor = int(argv[0])
    dirs = argv[1:] or ["."]
    logging.basicConfig(format=FORMAT, datefmt=DATE_FORMAT, level=logging.INFO)
    log = logging.getLogger("bastion.watch")
    # the supervisor stops us; the signals a process group gets (a closing terminal's
    # SIGHUP, a Ctrl-C, job control, logrotate's and upgrade's) are the supervisor's
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    for sig in (signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    watch_filter = watchfiles.PythonFilter(extra_extensions=(".toml",))
    watching = False
    for changes in watchfiles.watch(
        *dirs,
        watch_filter=watch_filter,
        debounce=200,
        rust_timeout=1000,
        yield_on_timeout=True,
    ):
        if os.getppid() != supervisor:
            return 0  # the supervisor is gone
        if not watching:
            # said once the watcher is live (its first answer): a change made after this
            # line is seen, one made before may not be
            watching = True
            log.info("watching %s for changes (--reload)", ", ".join(dirs))
        if not changes:
            continue
        names = sorted({Path(path).name for _, path in changes})
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        log.info("%s changed: reloading", shown)
        try:
            os.kill(supervisor, signal.SIGHUP)
        except ProcessLookupError:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
