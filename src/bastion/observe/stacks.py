"""Python stack dumps of every bastion process, for the admin listener's /debug/stacks.

The supervisor makes a private directory when the admin listener is on and registers
:mod:`faulthandler` for :data:`DUMP_SIGNAL`, writing to a file of its own there; every
worker does the same with a file named by its pid as soon as it is forked (until then
the signal is ignored, as every stray real-time signal is, so it never kills one). faulthandler
writes from its C signal handler, so a worker stuck in a loop that never returns to the
event loop still answers.

To dump, the admin process empties each file, sends the signal, waits until the files
stop growing, and reads them.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import shutil
import signal
import tempfile
from typing import IO

DUMP_SIGNAL = signal.SIGRTMIN + 6
SUPERVISOR = "supervisor"

_directory: str | None = None
_file: IO[bytes] | None = None  # kept open: faulthandler writes to its descriptor


def prepare() -> str:
    """In the supervisor: make the directory."""
    global _directory
    if _directory is None:
        _directory = tempfile.mkdtemp(prefix="bastion-stacks-")
    return _directory


def register_supervisor() -> None:
    """In the supervisor, once its own signal handlers are installed (they take every
    real-time signal, to ignore stray ones): dump into the supervisor's file."""
    if _directory is not None:
        _register(SUPERVISOR)


def register_worker() -> None:
    """In a freshly forked worker: dump into a file of its own from now on."""
    if _directory is not None:
        _register(str(os.getpid()))


def _register(name: str) -> None:
    global _file
    assert _directory is not None
    path = os.path.join(_directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    old, _file = _file, os.fdopen(fd, "ab", buffering=0)
    # (unregister first: a registration inherited across fork would otherwise keep
    # whatever handler was set since, e.g. SIG_IGN for stray real-time signals)
    faulthandler.unregister(DUMP_SIGNAL)
    faulthandler.register(DUMP_SIGNAL, file=_file, all_threads=True, chain=False)
    if old is not None:
        old.close()  # (the inherited descriptor of the parent's file)


def forget(pid: int) -> None:
    """The worker ``pid`` has exited: remove its file."""
    if _directory is not None:
        try:
            os.unlink(os.path.join(_directory, str(pid)))
        except OSError:
            pass


def remove() -> None:
    """In the supervisor, when it exits."""
    global _directory
    if _directory is not None:
        shutil.rmtree(_directory, ignore_errors=True)
        _directory = None


async def collect(
    directory: str, processes: list[tuple[str, int, str]], timeout: float = 2.0
) -> str:
    """Dump the stacks of ``processes`` ((title, pid, file name) each) and return the
    text: one section per process."""
    loop = asyncio.get_running_loop()
    paths = []
    for title, pid, name in processes:
        path = os.path.join(directory, name)
        try:
            with open(path, "r+b") as f:
                f.truncate(0)
            os.kill(pid, DUMP_SIGNAL)
        except OSError as exc:
            paths.append((title, "", f"(not dumped: {exc.strerror})\n"))
            continue
        paths.append((title, path, ""))
    # faulthandler writes the whole dump at once from the signal handler: wait until
    # every file has something and none grew for a moment
    deadline = loop.time() + timeout
    sizes: list[int] = []
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        now = [_size(path) for _, path, _ in paths]
        if now == sizes and all(n > 0 for n, (_, p, _) in zip(now, paths, strict=True) if p):
            break
        sizes = now
    out = []
    for title, path, note in paths:
        text = note
        if path:
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace") or "(no answer)\n"
            except OSError as exc:
                text = f"(not read: {exc.strerror})\n"
        out.append(f"=== {title} ===\n{text}")
    return "\n".join(out)


def _size(path: str) -> int:
    if not path:
        return 0
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
