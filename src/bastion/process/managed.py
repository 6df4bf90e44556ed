"""Managed processes: the ``[[process]]`` programs bastion runs beside its workers.

The supervisor starts each one (``subprocess.Popen``, its own session so a Ctrl-C in the
terminal reaches it only through bastion), reads its output through a pipe in the main
loop and logs each line as ``[name] line``, restarts it with a growing delay when it
ends, and on shutdown stops them one after the other, last declared first: the stop
signal, then ``SIGKILL`` after ``stop_timeout``. If the supervisor itself dies (even by
SIGKILL), each gets its stop signal from the kernel (see :mod:`bastion.process.pdeath`).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time

from bastion.config.processes import command_of
from bastion.config.schema import ProcessConfig
from bastion.observe.logging import logger
from bastion.process.children import describe_status
from bastion.process.pdeath import die_with_parent

MAX_LINE = 8192  # a longer line is logged in pieces


class Managed:
    """One ``[[process]]`` entry and its current run."""

    def __init__(self, cfg: ProcessConfig) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.backoff = cfg.backoff_min
        self.start_at = 0.0  # when to start it (again); inf: not to be started
        self.kill_at = math.inf
        self.buffer = b""
        self.restarts = 0

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def stop_signal(self) -> int:
        return int(getattr(signal, self.cfg.stop_signal.upper()))

    @property
    def fd(self) -> int:
        """The read end of its output pipe, or -1."""
        if self.proc is None or self.proc.stdout is None or self.proc.stdout.closed:
            return -1
        return self.proc.stdout.fileno()

    def start(self) -> None:
        cfg = self.cfg
        env = dict(os.environ)
        env.update(cfg.env)
        try:
            self.proc = subprocess.Popen(
                command_of(cfg),
                env=env,
                cwd=cfg.cwd or None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # its stop signal when the supervisor dies, even by SIGKILL
                preexec_fn=die_with_parent(self.stop_signal, os.getpid()),
            )
        except OSError as exc:
            logger.error("process %s: cannot start %s: %s", cfg.name, command_of(cfg)[0], exc)
            self.proc = None
            self._schedule_restart(time.monotonic(), failed=True)
            return
        os.set_blocking(self.fd, False)
        self.started = time.monotonic()
        self.start_at = math.inf
        logger.info("process %s started (pid %d)", cfg.name, self.proc.pid)

    def read_output(self) -> bool:
        """Log the complete lines available; False once the pipe is at its end."""
        if self.proc is None or self.proc.stdout is None:
            return False
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                chunk = b""
            if not chunk:
                self._flush(final=True)
                return False
            self.buffer += chunk
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        *lines, rest = self.buffer.split(b"\n")
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        if final and rest:
            lines.append(rest)
            rest = b""
        self.buffer = rest
        for line in lines:
            logger.info("[%s] %s", self.name, line.decode("utf-8", "replace").rstrip("\r"))

    def close_output(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def exited(self, status: int, stopping: bool) -> None:
        """Its process ended with wait ``status``: log it and plan a restart."""
        assert self.proc is not None
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.read_output()
        self.close_output()
        pid = self.proc.pid
        how = describe_status(status)
        self.proc = None
        self.kill_at = math.inf
        if stopping:
            logger.info("process %s (pid %d) %s", self.name, pid, how)
            return
        now = time.monotonic()
        failed = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
        restart = self.cfg.restart
        if restart == "never" or (restart == "on-failure" and not failed):
            logger.info(
                "process %s (pid %d) %s; not restarted (restart = %r)", self.name, pid, how, restart
            )
            self.start_at = math.inf
            return
        logger.warning("process %s (pid %d) %s", self.name, pid, how)
        self._schedule_restart(now, failed)

    def _schedule_restart(self, now: float, failed: bool) -> None:
        cfg = self.cfg
        if self.started and now - self.started >= cfg.backoff_max:
            self.backoff = cfg.backoff_min  # it ran well for a while: start over
        delay = self.backoff
        self.backoff = min(self.backoff * 2, cfg.backoff_max)
        self.start_at = now + delay
        self.restarts += 1
        logger.info("process %s: restarting in %gs", self.name, delay)

    def stop(self, now: float) -> None:
        """Ask it to stop (its stop signal); SIGKILL after ``stop_timeout``."""
        self.start_at = math.inf
        if self.proc is None:
            return
        sig = self.stop_signal
        logger.info("stopping process %s (pid %d)", self.name, self.proc.pid)
        self._signal(sig)
        self.kill_at = now + self.cfg.stop_timeout

    def kill(self) -> None:
        logger.warning("process %s did not stop in time: killing it", self.name)
        self.kill_at = math.inf
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass
