"""A named group of servers in one worker: choosing a server, lending connections,
passive ejection.

A server is ejected after ``max_fails`` consecutive failures (connect errors, timeouts,
5xx, malformed responses) for ``fail_timeout`` times the number of ejections in a row
(at most 10x); a success resets both counts. Never more than ``max_ejected_percent`` of
the primary servers are out at once. Backup servers take requests only while no primary
server can.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Protocol

from bastion.config.schema import UpstreamConfig
from bastion.upstream.address import parse_server
from bastion.upstream.balancers import Balancer, make_balancer
from bastion.upstream.connection import UpstreamConnection, UpstreamError, client_tls_context
from bastion.upstream.server import Server

__all__ = ["NoServer", "Upstream"]


class InFlight(Protocol):
    """A request waiting on an upstream, with a deadline the sweep enforces."""

    deadline: float  # loop time; 0 = none now

    def timed_out(self) -> None: ...


class NoServer(Exception):
    """Every server of the group is ejected, full or already tried."""


class Upstream:
    """The servers of one ``[upstreams.NAME]`` table, for one worker."""

    def __init__(self, name: str, cfg: UpstreamConfig, balancer: Balancer | None = None) -> None:
        self.name = name
        self.cfg = cfg
        specs = [parse_server(s) for s in cfg.servers]
        self.primary = [Server(s) for s in specs if not s.backup]
        self.backup = [Server(s) for s in specs if s.backup]
        self.servers = [*self.primary, *self.backup]
        #: for https:// servers (None when there are none)
        self.tls = client_tls_context(name, cfg) if any(s.tls for s in specs) else None
        self.balancer = balancer if balancer is not None else make_balancer(cfg.balance)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        #: requests sent and not yet answered in full, for their deadlines
        self.active: set[InFlight] = set()
        # deadlines are checked this often: a quarter of the shortest timeout, at most 1 s
        self.tick = min(
            1.0, cfg.first_byte_timeout / 4, cfg.read_timeout / 4, cfg.keepalive_timeout / 2
        )

    def now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else asyncio.get_running_loop().time()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule_sweep()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self.servers:
            server.close_idle()
        for request in list(self.active):
            request.timed_out()

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        self._sweeper = self._loop.call_later(min(self.cfg.keepalive_timeout, 5.0) / 2, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections older than ``keepalive_timeout``."""
        assert self._loop is not None
        now = self._loop.time()
        if self.active:
            expired = [r for r in self.active if 0.0 < r.deadline < now]
            for request in expired:
                request.timed_out()
        limit = now - self.cfg.keepalive_timeout
        keep = self.cfg.keepalive
        for server in self.servers:
            idle = server.idle
            while idle and idle[0].idle_since < limit:
                idle.pop(0).close()
            # the oldest of a burst's surplus, idle for a second: not needed any more
            while len(idle) > keep and idle[0].idle_since < now - 1.0:
                idle.pop(0).close()
            server.peak_in_flight = server.in_flight
        self._schedule_sweep()

    # -- choosing --------------------------------------------------------------------
    def choose(self, now: float, tried: list[Server] | None, key: bytes = b"") -> Server:
        """A server for the next try, not one of ``tried``; raise :class:`NoServer`."""
        for group in (self.primary, self.backup):
            candidates = [
                s for s in group if s.available(now) and (tried is None or s not in tried)
            ]
            if candidates:
                return self.balancer.choose(candidates, now, key)
        raise NoServer(self.name)

    # -- connections -----------------------------------------------------------------
    @staticmethod
    def idle_connection(server: Server) -> UpstreamConnection | None:
        """The most recently used idle connection to ``server``, or None."""
        idle = server.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self, server: Server) -> UpstreamConnection:
        """A new connection to ``server``."""
        loop = asyncio.get_running_loop()
        spec = server.spec
        try:
            async with asyncio.timeout(self.cfg.connect_timeout):
                if spec.unix_path:
                    _, conn = await loop.create_unix_connection(
                        lambda: UpstreamConnection(server), spec.unix_path
                    )
                elif spec.tls:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(server),
                        spec.host,
                        spec.port,
                        ssl=self.tls,
                        server_hostname=self.cfg.tls_server_name or spec.host,
                        ssl_handshake_timeout=self.cfg.connect_timeout,
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(server), spec.host, spec.port
                    )
        except TimeoutError:
            raise UpstreamError(f"connecting to {spec.label} timed out") from None
        except ssl.SSLError as exc:
            raise UpstreamError(f"TLS with {spec.label} failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {spec.label}: {exc.strerror or exc}") from None
        transport = conn.transport
        if transport is not None and not spec.unix_path:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Put a connection whose response ended back in the pool, or close it."""
        server = conn.server
        if conn.closed or not conn.reusable or conn.sink is not None:
            conn.close()
            return
        conn.resume_reading()
        # beyond ``keepalive``, a connection is kept while the group has lately had as
        # many requests in flight (a burst's connections are about to be needed again:
        # closing them would open as many new ones); the sweep trims the surplus once
        # it sits idle
        if len(server.idle) >= max(self.cfg.keepalive, server.peak_in_flight):
            conn.close()
            return
        conn.idle_since = now
        server.idle.append(conn)

    # -- health ----------------------------------------------------------------------
    def record_failure(self, server: Server, now: float) -> None:
        server.failed()
        if server.consecutive_failures < self.cfg.max_fails:
            return
        group = self.backup if server.spec.backup else self.primary
        out = sum(1 for s in group if s.ejected_until > now)
        if (out + 1) * 100 > self.cfg.max_ejected_percent * len(group):
            return  # ejecting it would take too much of the group out
        server.eject(now, self.cfg.fail_timeout)
        server.close_idle()

    def record_success(self, server: Server) -> None:
        server.succeeded()
