"""POSTs through an edge bastion while its backend bastions are stopped gracefully,
started again and reloaded: not one request fails.

A POST is never sent twice (it may have reached a server), so a request the edge writes
on a pooled connection that its backend is closing would be lost. A backend that stops
gracefully answers what it has with ``Connection: close``, keeps an idle connection open
a moment for a request that may be on its way, and closes its listener, so the edge's
next connection to it is refused before anything was sent, and that request goes to
another backend. A reload (SIGHUP) replaces the backend's workers one by one.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
from proc_tools import Load, free_port
from server import BastionProcess


def backend(port: int) -> BastionProcess:
    return BastionProcess(
        ["serve", "http_echo:app", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    ).start()


class PostLoad(Load):
    """``threads`` keep-alive clients POSTing until stopped (at most ``max_seconds``)."""

    BODY = b"p" * 2048

    def __init__(self, url: str, threads: int = 6, max_seconds: float = 120.0) -> None:
        super().__init__(url, "/order", threads, max_seconds)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    r = client.post(self.url + self.path, content=self.BODY)
                except Exception as exc:  # refused, reset, timed out: all count
                    self._failed(repr(exc))
                    continue
                if r.status_code == 200 and json.loads(r.text)["body_size"] != 2048:
                    self._failed(f"body cut: {r.text[:100]}")
                else:
                    self._answered(r.status_code, r.text)


def wait_for_more(load: Load, n: int, timeout: float = 30.0) -> None:
    """Until ``n`` more requests were answered (or failed): the load runs on through
    each step the test takes."""
    target = load.count() + n
    deadline = time.monotonic() + timeout
    while load.count() < target:
        assert time.monotonic() < deadline, f"the load stalled at {load.count()} requests"
        time.sleep(0.02)


def test_posts_survive_backends_stopping_restarting_and_reloading(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    backends = [backend(p) for p in ports]
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    config = tmp_path / "edge.toml"
    config.write_text(
        f"""
[server]
bind = ["127.0.0.1:0"]

[workers]
count = 1

[upstreams.app]
servers = [{servers}]

[[routes]]
path = "/"
proxy = "app"
"""
    )
    try:
        with BastionProcess(["serve", "--config", str(config)]) as edge, PostLoad(edge.url) as load:
            wait_for_more(load, 200)
            # a graceful stop under load
            assert backends[0].stop(20) == 0  # SIGTERM, then its exit
            wait_for_more(load, 300)
            # back on the same port
            backends[0] = backend(ports[0])
            wait_for_more(load, 300)
            # rolling reloads of the other two
            for b in backends[1:]:
                start = len(b.log)
                b.signal(signal.SIGHUP)
                b.wait_for_log(r"reload complete", 30, start=start)
                wait_for_more(load, 300)
            load.stop()
            assert not load.failures, (load.failures[:5], load.ok)
            assert load.ok >= 1000
    finally:
        for b in backends:
            b.stop()
