"""Start the real ``bastion`` command for end-to-end tests.

``BastionProcess`` runs ``python -m bastion serve ...`` (or any subcommand) on port 0,
reads the addresses it prints and waits until it says it is ready. Use it as a context
manager; it stops the server (SIGTERM, then SIGKILL) on exit and keeps everything it
wrote to stderr in ``.log`` for assertions.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import bastion

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"

# The folder of the bastion package these tests imported. The processes they start must
# run that same package: the working copy's sources (an editable install, or
# PYTHONPATH=src) or the installed copy under test (the pure pass of ``make test``,
# where ROOT/src, holding the compiled modules of the editable install, must stay off
# the path).
PACKAGE_PARENT = Path(bastion.__file__).resolve().parents[1]
_INSTALLED = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}


def child_env(
    env: dict[str, str] | None = None, *, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment for a ``python -m bastion`` child: ``base`` (default: ours) with
    PYTHONPATH leading to the bastion the tests imported, then ``env``."""
    full = dict(os.environ if base is None else base)
    if PACKAGE_PARENT not in _INSTALLED:
        full["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_PARENT), full.get("PYTHONPATH", "")) if p
        )
    full.update(env or {})
    return full


LISTEN_RE = re.compile(r"listening on (https?://\S+|unix:\S+)")
READY_RE = re.compile(r"\bready\b")


class BastionProcess:
    """A running ``bastion`` process. ``url`` is its first HTTP address."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        ready_timeout: float = 30.0,
    ) -> None:
        self.args = [sys.executable, "-m", "bastion", *args]
        self.cwd = str(cwd or APPS)
        self.env = child_env({"PYTHONUNBUFFERED": "1", **(env or {})})
        self.wait_ready = wait_ready
        self.ready_timeout = ready_timeout
        self.addresses: list[str] = []
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self._pump_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> BastionProcess:
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        if self.wait_ready:
            if not self._ready.wait(self.ready_timeout):
                self.stop()
                raise RuntimeError(f"bastion did not become ready:\n{self.log}")
            if not self.addresses:
                self.stop()
                raise RuntimeError(f"bastion printed no address:\n{self.log}")
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                with self._lock:
                    self._lines.append(line)
                m = LISTEN_RE.search(line)
                if m:
                    self.addresses.append(m.group(1))
                if READY_RE.search(line):
                    self._ready.set()
        except (ValueError, OSError):
            pass  # the pipe was closed under us
        self._ready.set()  # process ended: stop waiting

    def __enter__(self) -> BastionProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_pipe()
        return self.proc.returncode

    def _close_pipe(self) -> None:
        """Let the reader drain what is left, then close the pipe (no ResourceWarning)."""
        assert self.proc is not None
        thread = getattr(self, "_pump_thread", None)
        if thread is not None:
            thread.join(5)
            if thread.is_alive():
                return  # an orphaned worker holds the pipe open; closing would block
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def exit_status(self, timeout: float = 15.0) -> int:
        """For a bastion that should stop by itself (one that cannot start): wait up to
        ``timeout`` for it to exit and return its status; it is stopped in any case."""
        try:
            return self.wait(timeout)
        finally:
            self.stop()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    # -- helpers ---------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        for a in self.addresses:
            if a.startswith(("http://", "https://")):
                return a
        raise RuntimeError(f"no http address in {self.addresses}")

    @property
    def host_port(self) -> tuple[str, int]:
        rest = self.url.split("://", 1)[1]
        host, _, port = rest.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def log(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in the log after character ``start``."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            m = rx.search(self.log, start)
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not in log:\n{self.log}")


def serve(*args: str, **kw: object) -> BastionProcess:
    """``BastionProcess(["serve", *args, "--bind", "127.0.0.1:0"])``, not yet started."""
    argv = ["serve", *args]
    if "--bind" not in args and "-b" not in args and "-c" not in args:
        argv += ["--bind", "127.0.0.1:0"]
    return BastionProcess(argv, **kw)  # type: ignore[arg-type]


def peer_closed(sock: socket.socket) -> bool:
    """Whether the server has closed or reset this TCP connection, whatever data the
    kernel still holds for us to read (from the connection's TCP state)."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state != 1  # TCP_ESTABLISHED
