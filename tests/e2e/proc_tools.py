"""Helpers for the process tests: worker pids, polling, plain HTTP requests, steady load."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_pids(pid: int) -> set[int]:
    """The live (not zombie) children of ``pid``, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    """Poll ``predicate`` every 50 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def get(url: str, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
    """One GET on a fresh connection; returns (status, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def get_unix(path: str, target: str = "/", timeout: float = 10.0) -> tuple[int, str]:
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("GET", target, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


class Load:
    """``threads`` threads sending GETs (one connection each) until stopped.

    Records every success and every failure; a bounded run (``max_seconds``) even if the
    test forgets to stop it.
    """

    def __init__(self, url: str, path: str = "/", threads: int = 4, max_seconds: float = 30.0):
        self.url = url
        self.path = path
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                status, body = get(self.url, self.path, timeout=10)
            except Exception as exc:  # any failure counts: refused, reset, timed out
                self._failed(repr(exc))
                continue
            self._answered(status, body)

    def _answered(self, status: int, body: str) -> None:
        """One answer: a success if 200, else a failure."""
        if status != 200:
            self._failed(f"status {status}: {body[:100]}")
            return
        with self._lock:
            self.ok += 1
            self.bodies.append(body)

    def _failed(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def count(self) -> int:
        with self._lock:
            return self.ok + len(self.failures)


def pid_of(body: str) -> int:
    """The worker pid in an ``ok <pid>`` answer."""
    return int(body.split()[-1])


def assert_no_failures(load: Load) -> None:
    assert not load.failures, f"{len(load.failures)} failed requests: {load.failures[:5]}"


class KeepAliveLoad(Load):
    """Like :class:`Load`, but each thread keeps its connection open between requests
    and sends the next one as soon as the last answer is in, as wrk does. It never
    retries: a request sent on a connection the server then closes without answering
    is a failure. A connection is opened again only after an answer that said
    ``Connection: close`` (or after a failure)."""

    def __init__(self, url: str, path: str = "/", threads: int = 4, max_seconds: float = 30.0):
        super().__init__(url, path, threads, max_seconds)
        self.reconnects = 0

    def _run(self) -> None:
        parts = urlsplit(self.url)
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            if conn is None:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read().decode()
                status = resp.status
                closing = resp.will_close
            except Exception as exc:  # reset, closed without an answer, timed out
                self._failed(repr(exc))
                conn.close()
                conn = None
                continue
            self._answered(status, body)
            if closing:
                with self._lock:
                    self.reconnects += 1
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
