"""A worker: one process, one uvloop event loop, serving requests until told to stop.

The supervisor forks it and calls :func:`run_worker`, which never returns. In order the
worker resets the signal handlers it inherited, sets up non-blocking logging, loads the
app (unless the supervisor preloaded it), runs lifespan start-up, starts serving on the
inherited sockets, starts its heartbeat and tells the supervisor ``ready``.

SIGTERM or SIGINT start a graceful stop: stop accepting, let in-flight requests finish
within ``workers.graceful_timeout``, drop what is left, run lifespan shutdown, exit 0.
SIGUSR2 is the supervisor retiring the worker (a reload, a replacement, fewer workers):
the same stop, except that upgraded connections (WebSockets) go on until
``workers.graceful_timeout`` ends (or a SIGTERM comes) and are only then closed with
1001. A second SIGINT or a SIGQUIT stops at once. SIGUSR1 dumps every thread's Python stack to
the error log (the supervisor sends it before killing a worker whose loop is blocked).
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import os
import random
import signal
import socket
import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from bastion.config.schema import Config
from bastion.observe import stacks
from bastion.observe.accesslog import AccessLog, make_access_log
from bastion.observe.logging import (
    error_stream,
    flush_logging,
    logger,
    reopen_error_log,
    setup_worker_logging,
)
from bastion.process.control import ControlWriter, Message
from bastion.process.heartbeat import HeartbeatTable
from bastion.process.listeners import Listener, https_port, worker_sockets
from bastion.process.malloc import keep_buffers_on_the_heap
from bastion.process.signals import IGNORED
from bastion.process.tls import ServerTLS
from bastion.tasks import WorkerTasks

if TYPE_CHECKING:
    from bastion.gateway import Gateway
    from bastion.observe.board import Board

# Exit statuses a worker uses to tell the supervisor why it ended.
EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected error after start-up (logged)
EXIT_STARTUP_FAILED = 3  # the app failed to import or its lifespan start-up failed

# After the worker stops accepting, how long requests on just-accepted connections get
# to arrive before idle connections are closed (a client sends its request right after
# the handshake, so this covers far more than a round trip).
ACCEPT_SETTLE = 0.2
# after the grace of a retired worker, time for its sessions' close handshakes (1001)
SESSION_CLOSE_WAIT = 1.0

# Signals the supervisor handles; a worker must not act on the copies it inherited.
#: mypyc's three-argument throw() into an awaited coroutine (see _reset_process)
_THROW_WARNING = r"the \(type, exc, tb\) signature of throw\(\) is deprecated"

_INHERITED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGCHLD,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# Signals meant for the supervisor only (a whole process group may receive them), and
# those that mean nothing to bastion but would end the process by default. SIGHUP is
# ignored until the worker serves; from then on it reopens the log files (the supervisor
# sends it on SIGUSR1, for logrotate).
_IGNORED = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, *IGNORED)


@dataclass
class WorkerSpec:
    """Everything a worker takes from the supervisor across the fork."""

    config: Config
    listeners: list[Listener]
    heartbeat: HeartbeatTable
    slot: int
    control_fd: int
    close_fds: list[int]  # supervisor-side descriptors this process must not keep
    loaded: Any = None  # the preloaded app (bastion.gateway.loader.LoadedApp) or None
    tls: ServerTLS | None = None  # made before the fork: one set of session ticket keys
    board: Board | None = None  # the metrics board, with the admin listener on


def run_worker(spec: WorkerSpec) -> NoReturn:
    """The body of a forked worker. Exits the process; never returns."""
    code = EXIT_ERROR
    try:
        code = _Worker(spec).run()
    except BaseException:
        try:
            logger.critical("worker crashed:\n%s", traceback.format_exc())
        except BaseException:
            pass
    finally:
        try:
            flush_logging()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _startup_message(exc: BaseException) -> str:
    """The app's own words for why it could not start."""
    from bastion.gateway.lifespan import LifespanFailure
    from bastion.gateway.loader import AppLoadError

    if isinstance(exc, AppLoadError | LifespanFailure):
        return str(exc) or type(exc).__name__
    return "".join(traceback.format_exception(exc)).rstrip()


def recycle_limit(max_requests: int, jitter: int) -> int:
    """The number of requests after which this worker asks to be replaced:
    ``max_requests`` plus a random 0..``jitter``, drawn once per worker."""
    return max_requests + random.randint(0, jitter)


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.config = spec.config
        self.control = ControlWriter(spec.control_fd)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping: asyncio.Event | None = None
        self.retiring = False  # SIGUSR2: let sessions run until the grace ends
        self.hurry: asyncio.Event | None = None  # SIGTERM while retiring: close them now
        self.stop_count = 0
        self.immediate = False
        self.recycle_sent = False
        self.limit = 0
        self.tracker: Any = None
        self.handshakes: Any = None  # the TLS handshake gate (TLS listeners only)
        self.recorder: Any = None
        self.tasks = WorkerTasks()  # every request task of this worker
        self.access_log: AccessLog | Any = None  # (or a SlowLog in front of it)
        self.parent = os.getppid()
        # at least three beats per timeout, so a busy but healthy loop is never mistaken
        # for a blocked one
        workers = spec.config.workers
        self.beat_every = min(workers.heartbeat_interval, workers.timeout / 3)

    # -- process set-up ----------------------------------------------------------------
    def _reset_process(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in _INHERITED:
            signal.signal(sig, signal.SIG_DFL)
        for ignored in _IGNORED:
            signal.signal(ignored, signal.SIG_IGN)
        # the supervisor blocked these around the fork
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (*_INHERITED, *_IGNORED))
        for fd in self.spec.close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        random.seed()  # the parent's random state would be shared by every worker
        keep_buffers_on_the_heap()  # TLS reads: no mapping made and unmade per record
        setup_worker_logging(self.config.log)
        faulthandler.register(signal.SIGUSR1, file=error_stream(), all_threads=True)
        stacks.register_worker()  # the admin listener's /debug/stacks
        if sys.version_info >= (3, 12):
            # Compiled coroutines pass a cancellation (a client that left, a shutdown)
            # on to the coroutine they await with the three-argument throw() that
            # Python 3.12 deprecated: the cancellation works, the warning (shown with
            # -X dev or -W default, once per place) says nothing about the app.
            warnings.filterwarnings("ignore", message=_THROW_WARNING, category=DeprecationWarning)

    # -- main --------------------------------------------------------------------------
    def run(self) -> int:
        self._reset_process()
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            return loop.run_until_complete(self._main())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                # (closing the loop put SIGHUP's default back, which ends a process: a
                # log reopen the supervisor sends now must find it ignored)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)

    async def _main(self) -> int:
        from bastion.edge.assemble import build_site

        self.stopping = asyncio.Event()
        self.hurry = asyncio.Event()
        try:
            # the app's gateway itself without routes; with routes, the router and the
            # apps the routes use
            gateway = build_site(self.config, self.spec.loaded, self.tasks)
            await gateway.startup()
        except Exception as exc:
            message = _startup_message(exc)
            self.control.send(Message(kind="failed", message=message))
            return EXIT_STARTUP_FAILED
        try:
            servers = await self._serve(gateway)
        except Exception as exc:
            self.control.send(Message(kind="failed", message=f"cannot serve: {exc}"))
            await self._shutdown_gateway(gateway)
            return EXIT_STARTUP_FAILED
        self._install_signals()
        self._beat()
        self.control.send(Message(kind="ready", interface=gateway.interface))
        await self.stopping.wait()
        return await self._stop(gateway, servers)

    async def _serve(self, gateway: Gateway) -> list[asyncio.AbstractServer]:
        from bastion.observe.board import route_labels
        from bastion.protocol.handshake import tls_factory
        from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings
        from bastion.protocol.proxy import expects_proxy, proxied
        from bastion.protocol.state import ConnectionTracker

        labels = route_labels(self.config) if self.config.routes else []
        access_log: Any = make_access_log(self.config.log, labels)
        if self.config.log.slow_request_ms:
            from bastion.observe.slowlog import SlowLog

            access_log = SlowLog(self.config.log.slow_request_ms, access_log, labels)
        recorder = None
        if self.spec.board is not None:
            from bastion.observe.recorder import Recorder

            recorder = Recorder(self.spec.board, self.spec.slot, route_labels(self.config))
        self.recorder = recorder
        self.access_log = access_log
        settings = ProtocolSettings.from_config(self.config, access_log=access_log)
        tracker = ConnectionTracker()
        self.tracker = tracker
        if recorder is not None:
            recorder.attach(tracker)  # counting from the first connection on
        workers = self.config.workers
        if workers.max_requests:
            self.limit = recycle_limit(workers.max_requests, workers.max_requests_jitter)
            logger.info("worker %d will be recycled after %d requests", os.getpid(), self.limit)
            tracker.on_request = self._count
        handler = gateway.handler
        assert self.loop is not None
        servers: list[asyncio.AbstractServer] = []
        listeners = self.spec.listeners
        socks: list[socket.socket] = worker_sockets(listeners, self.config.server.backlog)
        tls = self.spec.tls
        gate = None
        redirect = None
        for lst, sock in zip(listeners, socks, strict=True):
            if lst.redirect:
                if redirect is None:
                    from bastion.edge.https_redirect import HttpsRedirect

                    redirect = HttpsRedirect(https_port(listeners))
                server = await self.loop.create_server(
                    proxied(
                        functools.partial(HTTP1Protocol, settings, redirect, tracker),
                        expects_proxy(self.config.server, lst.spec.text, redirect=True),
                    ),
                    sock=sock,
                    backlog=self.config.server.backlog,
                )
            elif tls is not None:
                # plain TCP: the gate starts TLS on each connection (a cap on the
                # handshakes in progress; a PROXY header read before the handshake)
                if gate is None:
                    from bastion.protocol.handshake import HandshakeGate

                    gate = HandshakeGate(
                        tls.context,
                        tls.handshake_timeout,
                        self.config.tls.max_handshakes,
                        self.config.tls.handshake_wait,
                    )
                    self.handshakes = gate
                server = await self.loop.create_server(
                    tls_factory(
                        gate,
                        lambda: HTTP1Protocol(settings, handler, tracker),
                        expects_proxy(self.config.server, lst.spec.text),
                    ),
                    sock=sock,
                    backlog=self.config.server.backlog,
                )
            else:
                server = await self.loop.create_server(
                    proxied(
                        lambda: HTTP1Protocol(settings, handler, tracker),
                        expects_proxy(self.config.server, lst.spec.text),
                    ),
                    sock=sock,
                    backlog=self.config.server.backlog,
                )
            servers.append(server)
        if recorder is not None:
            recorder.start(self.loop, tracker)
        return servers

    # -- max_requests ----------------------------------------------------------------
    def _count(self) -> None:
        if not self.recycle_sent and self.tracker.requests_served >= self.limit:
            self.recycle_sent = True
            logger.info("worker %d served %d requests: recycling", os.getpid(), self.limit)
            self.control.send(Message(kind="recycle"))

    # -- heartbeat ---------------------------------------------------------------------
    def _beat(self) -> None:
        tracker = self.tracker
        if tracker is None:
            self.spec.heartbeat.beat(self.spec.slot)
        else:
            # what the supervisor reports as lost if this worker dies before the next
            conns = tracker.connections
            busy = sum(1 for c in conns if not c.is_idle)
            self.spec.heartbeat.beat(self.spec.slot, len(conns), busy)
        assert self.loop is not None and self.stopping is not None
        if os.getppid() != self.parent and not self.stopping.is_set():
            # the supervisor died (SIGKILL, OOM killer): nobody would ever stop us
            logger.warning("worker %d: the supervisor is gone, stopping", os.getpid())
            self.stopping.set()
        self.loop.call_later(self.beat_every, self._beat)

    # -- stopping ----------------------------------------------------------------------
    def _install_signals(self) -> None:
        assert self.loop is not None
        self.loop.add_signal_handler(signal.SIGTERM, self._on_stop, signal.SIGTERM)
        self.loop.add_signal_handler(signal.SIGINT, self._on_stop, signal.SIGINT)
        self.loop.add_signal_handler(signal.SIGQUIT, self._on_quit)
        self.loop.add_signal_handler(signal.SIGUSR2, self._on_retire)
        self.loop.add_signal_handler(signal.SIGHUP, self._reopen_logs)

    def _reopen_logs(self) -> None:
        """The supervisor got SIGUSR1 (logrotate): open the log files again by name."""
        try:
            if reopen_error_log():
                # the stack dumps go to the new file too
                faulthandler.register(signal.SIGUSR1, file=error_stream(), all_threads=True)
        except OSError as exc:
            logger.error("worker %d: cannot reopen log.error_file: %s", os.getpid(), exc)
        if self.access_log is not None:
            self.access_log.reopen()

    def _on_retire(self) -> None:
        assert self.stopping is not None
        if not self.stopping.is_set():
            self.retiring = True
            self.stopping.set()

    def _on_stop(self, sig: int) -> None:
        assert self.stopping is not None
        self.stop_count += 1
        if self.stop_count > 1 and sig == signal.SIGINT:
            self._on_quit()
            return
        if self.hurry is not None:
            self.hurry.set()
        self.stopping.set()

    def _on_quit(self) -> None:
        # stop at once: no draining, no lifespan shutdown
        logger.info("worker %d stopping immediately", os.getpid())
        try:
            if self.tracker is not None:
                self.tracker.abort_all()
            self.tasks.cancel_all()
            flush_logging()
        finally:
            os._exit(EXIT_OK)

    async def _stop(self, gateway: Gateway, servers: list[asyncio.AbstractServer]) -> int:
        for server in servers:
            server.close()
        # A connection accepted just before the close may not have delivered its first
        # request yet (its connection_made may even be still queued). Closing it now as
        # "idle" would drop a request the client has already sent, so let such requests
        # arrive before idle connections are closed.
        await asyncio.sleep(ACCEPT_SETTLE)
        tracker = self.tracker
        grace = self.config.workers.graceful_timeout
        if self.retiring:
            # WebSockets and other sessions may go on until the grace ends
            grace = await self._retire_sessions_later(grace)
        tracker.shutdown()
        if not await tracker.wait_closed(grace):
            logger.warning(
                "worker %d: %d connection(s) still busy after %gs: closing them",
                os.getpid(),
                len(tracker.connections),
                grace,
            )
        tracker.abort_all()
        if self.handshakes is not None:
            self.handshakes.close()
        await self._shutdown_gateway(gateway)
        if self.recorder is not None:
            self.recorder.close()
        if self.access_log is not None:
            self.access_log.close()
        return EXIT_OK

    async def _retire_sessions_later(self, grace: float) -> float:
        """Close every connection but the upgraded ones (as at shutdown), and wait for
        them all to end until ``grace`` runs out or a SIGTERM comes; return the time left
        for the close handshakes of the sessions still open."""
        from bastion.protocol.http1 import HTTP1Protocol

        tracker = self.tracker
        assert self.loop is not None and self.hurry is not None
        start = self.loop.time()
        tracker.draining = True
        for conn in list(tracker.connections):
            if not (isinstance(conn, HTTP1Protocol) and conn.upgraded):
                conn.shutdown()
        closed = asyncio.ensure_future(tracker.wait_closed(grace))
        hurry = asyncio.ensure_future(self.hurry.wait())
        try:
            await asyncio.wait((closed, hurry), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            hurry.cancel()
        if tracker.connections:
            logger.info(
                "worker %d: closing %d connection(s) still open after %gs",
                os.getpid(),
                len(tracker.connections),
                self.loop.time() - start,
            )
        return max(grace - (self.loop.time() - start), SESSION_CLOSE_WAIT)

    async def _shutdown_gateway(self, gateway: Gateway) -> None:
        try:
            await gateway.shutdown()
        except Exception:
            logger.exception("worker %d: error during shutdown", os.getpid())
