"""A named group of servers in one worker: choosing a server, lending connections,
passive ejection.

A server is ejected after ``max_fails`` consecutive failures (connect errors, timeouts,
5xx, malformed responses) for ``fail_timeout`` times the number of ejections in a row
(at most 10x); a success resets both counts. Never more than ``max_ejected_percent`` of
the primary servers are out at once. Backup servers take requests only while no primary
server can.

Also here: the balancing key (``hash_on``) and sticky cookie read from a request, the
active health checker (:mod:`.health`), the retry budget (:mod:`.budget`), names
re-resolved every ``resolve_interval`` seconds, and :meth:`Upstream.stats`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import ssl
from collections.abc import Awaitable, Sequence
from hashlib import blake2b
from time import monotonic as _time_monotonic
from typing import TYPE_CHECKING, Any, Final, Protocol

from bastion.config.schema import UpstreamConfig
from bastion.observe.logging import logger
from bastion.upstream.address import ServerSpec, parse_server
from bastion.upstream.balancers import Balancer, ConsistentHash, make_balancer
from bastion.upstream.budget import RetryBudget
from bastion.upstream.connection import UpstreamConnection, UpstreamError, client_tls_context
from bastion.upstream.health import HealthChecker
from bastion.upstream.server import Server

#: the clock of deadlines and latencies (a static in the compiled build)
_monotonic: Final = _time_monotonic

if TYPE_CHECKING:
    from bastion.protocol.head import RequestHead
    from bastion.tasks import WorkerTasks

__all__ = ["NoServer", "Upstream"]


class InFlight(Protocol):
    """A request waiting on an upstream, with a deadline the sweep enforces."""

    deadline: float  # loop time; 0 = none now

    def timed_out(self) -> None: ...


class Resolve(Protocol):
    """``loop.getaddrinfo``'s shape, as far as :meth:`Upstream.resolve` uses it."""

    def __call__(
        self, host: str, port: int, *, type: int
    ) -> Awaitable[Sequence[tuple[Any, Any, Any, Any, tuple[Any, ...]]]]: ...


class NoServer(Exception):
    """Every server of the group is ejected, full or already tried."""


#: the groups started in this worker and not stopped (the metrics recorder reads their
#: servers' counters once a second; nothing here is read on the request path)
RUNNING: Final[dict[Upstream, None]] = {}


class Upstream:
    """The servers of one ``[upstreams.NAME]`` table, for one worker."""

    def __init__(self, name: str, cfg: UpstreamConfig, balancer: Balancer | None = None) -> None:
        self.name = name
        self.cfg = cfg
        specs = [parse_server(s) for s in cfg.servers]
        #: each server line and the servers it stands for now (one, or one per address
        #: its name resolved to)
        self.lines: list[tuple[ServerSpec, list[Server]]] = [(s, [Server(s)]) for s in specs]
        self.primary: list[Server] = []
        self.backup: list[Server] = []
        self.servers: list[Server] = []
        self._sticky_key = (cfg.sticky_secret or name).encode()[:64]
        self.sticky_cookie = cfg.sticky_cookie.encode("latin-1")
        self.hash_header = b""
        self.hash_cookie = b""
        hash_on = cfg.hash_on
        if hash_on.startswith("header:"):
            self.hash_header = hash_on[7:].strip().lower().encode("latin-1")
        elif hash_on.startswith("cookie:"):
            self.hash_cookie = hash_on[7:].strip().encode("latin-1")
        self.hash_path = hash_on == "path"
        #: whether :meth:`key` is needed (the balancer hashes)
        self.keyed = cfg.balance == "hash"
        #: for https:// servers (None when there are none)
        self.tls = client_tls_context(name, cfg) if any(s.tls for s in specs) else None
        self.balancer = balancer if balancer is not None else make_balancer(cfg.balance)
        self._arrange()
        self.budget = RetryBudget(cfg.retry_budget, cfg.retry_min_per_second)
        self.checker: HealthChecker | None = None
        self._resolver: asyncio.TimerHandle | None = None
        #: the name lookup (the loop's getaddrinfo, which runs in a thread; tests swap it)
        self.getaddrinfo: Resolve | None = None
        self._tasks: WorkerTasks | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        #: requests sent and not yet answered in full, for their deadlines
        self.active: set[InFlight] = set()
        # the last "no server can take requests" line, and the requests since (no_server)
        self._no_server_logged = -math.inf
        self._no_server_unlogged = 0
        # deadlines are checked this often: a quarter of the shortest timeout, at most 1 s
        self.tick = min(
            1.0, cfg.first_byte_timeout / 4, cfg.read_timeout / 4, cfg.keepalive_timeout / 2
        )

    def now(self) -> float:
        # not loop.time(): uvloop's is read once per loop turn in whole milliseconds,
        # so an answer from a nearby server in under a millisecond measured 0 s
        return _monotonic()

    def _arrange(self) -> None:
        """Rebuild the server lists (and the hash ring) from ``lines``."""
        servers = [server for _, group in self.lines for server in group]
        self.primary = [s for s in servers if not s.spec.backup]
        self.backup = [s for s in servers if s.spec.backup]
        self.servers = [*self.primary, *self.backup]
        for server in self.servers:
            if not server.token:
                server.token = self.sticky_token(server)
        if isinstance(self.balancer, ConsistentHash):
            self.balancer.rebuild(self.servers)

    def sticky_token(self, server: Server) -> bytes:
        """The sticky cookie's value for ``server``: a keyed hash of its address, the
        same in every worker, telling a client nothing about the address."""
        digest = blake2b(server.spec.label.encode(), key=self._sticky_key, digest_size=12)
        return digest.hexdigest().encode("ascii")

    # -- lifecycle -------------------------------------------------------------------
    def start(self, tasks: WorkerTasks | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule_sweep()
        RUNNING[self] = None
        self._tasks = tasks
        if tasks is None:
            return
        if self.cfg.health_path:
            self.checker = HealthChecker(self.name, self.cfg, lambda: self.servers, tasks)
            self.checker.start()
        if self.cfg.resolve_interval > 0 and any(_is_name(s.host) for s, _ in self.lines):
            tasks.spawn(self.resolve())

    def stop(self) -> None:
        RUNNING.pop(self, None)
        if self.checker is not None:
            self.checker.stop()
        if self._resolver is not None:
            self._resolver.cancel()
            self._resolver = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self.servers:
            server.close_idle()
        for request in list(self.active):
            request.timed_out()

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        # a quarter of the shortest timeout (at most 1 s): a deadline is met within it
        delay = self.tick
        if self.cfg.timeout:  # the total timeout is enforced to within a quarter of it
            delay = min(delay, max(self.cfg.timeout / 4, 0.05))
        self._sweeper = self._loop.call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections older than ``keepalive_timeout``."""
        assert self._loop is not None
        now = self.now()
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

    # -- names -----------------------------------------------------------------------
    async def resolve(self) -> None:
        """Resolve every server name now (without blocking: ``loop.getaddrinfo``), then
        again in ``resolve_interval`` seconds."""
        loop = asyncio.get_running_loop()
        lookup = self.getaddrinfo or loop.getaddrinfo
        changed = False
        for index, (spec, current) in enumerate(self.lines):
            if not _is_name(spec.host):
                continue
            try:
                infos = await lookup(spec.host, spec.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                logger.warning(
                    "upstream %s: cannot resolve %s (%s); keeping %d address(es)",
                    self.name,
                    spec.host,
                    exc.strerror or exc,
                    len(current),
                )
                continue
            addresses = sorted({str(info[4][0]) for info in infos})
            if not addresses or addresses == sorted(s.spec.host for s in current):
                continue
            kept = {s.spec.host: s for s in current if s.spec.host in addresses}
            fresh = [kept.get(a) or Server(spec._replace(host=a)) for a in addresses]
            for server in current:
                if server.spec.host not in addresses:
                    server.draining = True  # requests in flight finish; no new ones
                    server.close_idle()
            self.lines[index] = (spec, fresh)
            changed = True
        if changed:
            self._arrange()
        if self._loop is not None and self._tasks is not None and self._sweeper is not None:
            tasks = self._tasks
            self._resolver = self._loop.call_later(
                self.cfg.resolve_interval, lambda: tasks.spawn(self.resolve())
            )

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

    def key(self, head: RequestHead) -> bytes:
        """What ``balance = "hash"`` hashes for this request (``hash_on``)."""
        if self.hash_header:
            return head.header(self.hash_header) or b""
        if self.hash_cookie:
            return cookie_value(head, self.hash_cookie)
        if self.hash_path:
            return head.raw_path
        client = head.client
        return client[0].encode("latin-1") if client is not None else b""

    def sticky_server(
        self, head: RequestHead, now: float, tried: list[Server] | None
    ) -> Server | None:
        """The server the request's sticky cookie names, if it can take the request."""
        token = cookie_value(head, self.sticky_cookie)
        if not token:
            return None
        for server in self.servers:
            if server.token == token:
                if (
                    server.available(now)
                    and not server.draining
                    and (tried is None or server not in tried)
                ):
                    return server
                return None
        return None

    def stats(self) -> list[dict[str, object]]:
        """Per server: requests, failures, in flight, latency (peak EWMA, seconds),
        ejections and state ("up", "ejected", "unhealthy", "draining"), for the
        operations side. Servers draining after a name change are not listed."""
        now = self.now()
        return [server.stats(now) for server in self.servers]

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
        if conn.closed or not conn.reusable or conn.sink is not None or server.draining:
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
    def record_failure(self, server: Server, now: float, connected: bool = True) -> None:
        """A try on ``server`` failed (``connected``: it took the connection, then
        answered badly or not in time); ``max_fails`` in a row eject it."""
        server.failed()
        if server.consecutive_failures < self.cfg.max_fails:
            return
        if not self._may_eject(server, now, connected):
            return
        self._eject(server, now)

    def _may_eject(self, server: Server, now: float, connected: bool) -> bool:
        """Never the last server that can take requests. Beyond that, a server that
        cannot be reached is of no use to anyone and goes (as nginx's max_fails does);
        one that answers badly goes only while ``max_ejected_percent`` of its group
        stays in (Envoy's outlier detection): a failure every server shows (a bug of
        the app's, a database down) must not empty the group. The primary servers may
        all go when a backup can take their requests (that is what backups are for)."""
        others = [
            s for s in self.servers if s is not server and s.healthy and s.ejected_until <= now
        ]
        if not others:
            return False
        if not connected:
            return True
        if not server.spec.backup and any(s.spec.backup for s in others):
            return True
        group = self.backup if server.spec.backup else self.primary
        out = sum(1 for s in group if s.ejected_until > now)
        return (out + 1) * 100 <= self.cfg.max_ejected_percent * len(group)

    def _eject(self, server: Server, now: float) -> None:
        failures = server.consecutive_failures
        server.eject(now, self.cfg.fail_timeout)
        server.close_idle()
        # (once per ejection: at most one line per server and fail_timeout)
        logger.warning(
            "upstream %s: server %s ejected for %gs after %d failures in a row "
            "(connect errors, 5xx, bad responses, timeouts)",
            self.name,
            server.label,
            server.ejected_until - now,
            failures,
        )

    def record_success(self, server: Server) -> None:
        server.succeeded()

    def no_server(self, now: float) -> int:
        """A request found no server that could take it: -1 when that was logged less
        than a second ago (an outage must not write a line per request), else how many
        such requests went unlogged since the last line."""
        since = now - self._no_server_logged
        if since < 1.0:
            self._no_server_unlogged += 1
            return -1
        # (requests of an outage that ended long ago are not this one's to report)
        unlogged = self._no_server_unlogged if since < 2.0 else 0
        self._no_server_logged = now
        self._no_server_unlogged = 0
        return unlogged


def _is_name(host: str) -> bool:
    """A host name (to resolve), not an address literal nor a Unix socket."""
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def cookie_value(head: RequestHead, name: bytes) -> bytes:
    """The value of cookie ``name`` in the request's ``Cookie`` headers, or b""."""
    for header, value in head.headers:
        if header != b"cookie":
            continue
        for part in value.split(b";"):
            key, sep, found = part.strip().partition(b"=")
            if sep and key == name:
                return found.strip().strip(b'"')
    return b""
