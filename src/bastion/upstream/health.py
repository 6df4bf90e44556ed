"""Active health checks: each server of a group is asked ``GET health_path`` every
``health_interval`` seconds (plus or minus ``health_jitter`` of it); ``health_fall``
failures in a row (no connection, a timeout, a status not in ``health_status``) take
it out of rotation, ``health_rise`` passes in a row bring it back.

One checker per group per worker: each worker decides on its own, as it does for
passive ejection, so no state is shared between processes and a worker that cannot
reach a server (its own connections failing) acts on what it sees. The cost is one
check per server per worker per interval, a few requests a second at most. The checks
run as short tasks of the worker's :class:`~bastion.tasks.WorkerTasks`, started from a
timer, one per server per round, each bounded by ``health_timeout``: nothing blocks the
loop, and at shutdown only checks already under way are waited for.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from bastion.config.schema import UpstreamConfig
from bastion.observe.logging import logger
from bastion.tasks import WorkerTasks
from bastion.upstream.server import Server

__all__ = ["HealthChecker", "check_once"]


async def check_once(server: Server, cfg: UpstreamConfig) -> str:
    """Check ``server`` once: "" when it passed, else what was wrong."""
    spec = server.spec
    request = (
        b"GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: bastion-health-check\r\n"
        b"connection: close\r\n\r\n" % (cfg.health_path.encode("latin-1"), spec.authority)
    )
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(cfg.health_timeout):
            if spec.unix_path:
                reader, writer = await asyncio.open_unix_connection(spec.unix_path)
            else:
                reader, writer = await asyncio.open_connection(spec.host, spec.port)
            writer.write(request)
            line = await reader.readline()
    except TimeoutError:
        return f"no answer within {cfg.health_timeout:g} s"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    finally:
        if writer is not None:
            writer.transport.abort()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return f"not an HTTP answer: {line[:40]!r}"
    status = int(parts[1])
    expected = cfg.health_status
    if (status in expected) if expected else 200 <= status < 400:
        return ""
    return f"status {status}"


class HealthChecker:
    """The timer-driven checks of one group in one worker."""

    def __init__(
        self,
        name: str,
        cfg: UpstreamConfig,
        servers: Callable[[], Sequence[Server]],
        tasks: WorkerTasks,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.servers = servers
        self.tasks = tasks
        self.random = rng or random.Random()
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[Server] = set()

    def start(self) -> None:
        self._schedule(first=True)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, first: bool = False) -> None:
        interval = self.cfg.health_interval
        jitter = self.cfg.health_jitter * interval
        # the first round soon (a spread within one jitter), then every interval
        delay = self.random.uniform(0, jitter) if first else interval
        if not first and jitter:
            delay += self.random.uniform(-jitter, jitter)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(delay, 0.0), self._round)

    def _round(self) -> None:
        for server in self.servers():
            if server not in self._running:  # a slow check is not started twice
                self._running.add(server)
                self.tasks.spawn(self._check(server))
        self._schedule()

    async def _check(self, server: Server) -> None:
        try:
            problem = await check_once(server, self.cfg)
        finally:
            self._running.discard(server)
        self.record(server, problem)

    def record(self, server: Server, problem: str) -> None:
        cfg = self.cfg
        if not problem:
            server.check_fails = 0
            if server.healthy:
                return
            server.check_passes += 1
            if server.check_passes >= cfg.health_rise:
                server.healthy = True
                server.check_passes = 0
                server.ejected_until = 0.0  # passive ejection ends with the checks' word
                server.ejections = 0
                logger.warning(
                    "upstream %s: %s is back (passed %d health checks)",
                    self.name,
                    server.spec.label,
                    cfg.health_rise,
                )
            return
        server.check_passes = 0
        if not server.healthy:
            return
        server.check_fails += 1
        if server.check_fails >= cfg.health_fall:
            server.healthy = False
            server.check_fails = 0
            server.close_idle()
            logger.warning(
                "upstream %s: %s is out (%d failed health checks, the last: %s)",
                self.name,
                server.spec.label,
                cfg.health_fall,
                problem,
            )
