"""The admin listener: health, metrics and the dashboard, in a process of its own.

The supervisor binds the admin socket and maps the metrics board (see
:mod:`bastion.observe.board`) before it forks anything, then forks this process. It
serves ``/livez``, ``/readyz``, ``/metrics``, the dashboard at ``/`` and its live
updates at ``/events`` (Server-Sent Events), reading nothing but the shared board and
``/proc``. It never touches a worker, so it answers while every worker is busy or
stuck; it never runs in the supervisor, whose loop stays free of threads (it forks) and
of anything that could block it. Why a process rather than a thread or an event loop in
the supervisor: docs/operations.md.

The supervisor restarts it if it dies, and stops it last, after the workers, so that
``/readyz`` says "draining" until the end.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import ipaddress
import json
import os
import signal
import socket
import sys
import time
import traceback
from importlib import resources
from typing import NoReturn
from urllib.parse import parse_qs, urlsplit

from bastion.config.binds import parse_bind
from bastion.config.errors import ConfigError
from bastion.config.schema import AdminConfig, Config
from bastion.observe import stacks
from bastion.observe.board import FREE, PID, RETIRING, STATE, STATE_NAMES, Board, route_labels
from bastion.observe.dashboard.snapshot import Snapshots
from bastion.observe.logging import flush_logging, logger, setup_worker_logging
from bastion.observe.prometheus import render_metrics
from bastion.observe.reading import is_ready, read_board, supervisor_alive
from bastion.process.children import describe_status
from bastion.process.heartbeat import MAX_SLOTS

RESTART_DELAY = 1.0  # before restarting an admin process that died
LIVE_WITHIN = 10.0  # /livez fails when the supervisor's loop has not turned for this long
MAX_HEAD = 16384
READ_TIMEOUT = 10.0
#: on stop, how long the requests already taken may take to be answered (seconds)
DRAIN_TIMEOUT = 2.0
SSE_EVERY = 1.0
STOP_SIGNAL = signal.SIGUSR1  # from the supervisor only (the admin ignores SIGTERM)

_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_OPEN_PATHS = frozenset({"/livez", "/readyz"})  # no token needed: what probes ask


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(cfg: AdminConfig) -> str:
    """The bearer token: ``token``, or the first line of ``token_file``; "" for none."""
    if cfg.token_file:
        try:
            with open(cfg.token_file, encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as exc:
            raise ConfigError(f"admin.token_file: cannot read {cfg.token_file}: {exc}") from None
        if not token:
            raise ConfigError(f"admin.token_file: {cfg.token_file} is empty")
        return token
    return cfg.token


def open_admin_socket(bind: str) -> socket.socket:
    spec = parse_bind(bind)
    host = spec.host or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, spec.port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        # (no SO_REUSEPORT: a second bastion given the same admin port must fail, not
        # share it; an upgrading bastion inherits the socket instead of binding again)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            why += " (another program, or another bastion, is listening there)"
        raise ConfigError(f"admin.bind: cannot listen on {bind}: {why}") from None
    sock.set_inheritable(False)
    return sock


class AdminSide:
    """The supervisor's handle on the admin process and the metrics board."""

    def __init__(self, config: Config, slots: int = MAX_SLOTS) -> None:
        self.config = config
        self.board = Board(route_labels(config), slots)
        self.sock: socket.socket | None = None
        self.token = ""
        self.pid = 0
        self.restart_at = 0.0
        self.stopping = False
        self.stacks_dir = ""
        self.renewing = False  # stopped to start again with a reload's settings
        #: an upgrade's new bastion on the old one's socket: its admin process waits
        #: until it takes over, so that one bastion at a time answers there
        self.held = False
        self.inherited = False  # the socket came from the bastion this one upgrades

    @property
    def fds(self) -> list[int]:
        """Descriptors a worker must close."""
        return [self.sock.fileno()] if self.sock is not None else []

    def open(self, inherited: socket.socket | None = None) -> None:
        """Bind the admin socket (raises ConfigError), or take the ``inherited`` one (an
        upgrade), and say where it is."""
        self.token = read_token(self.config.admin)
        self.inherited = inherited is not None
        if inherited is not None:
            self.sock = inherited
        else:
            self.sock = open_admin_socket(self.config.admin.bind)
        self.stacks_dir = stacks.prepare()
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        logger.info("admin on http://%s:%d", shown, port)

    def start(self, close_fds: list[int]) -> None:
        """Fork the admin process."""
        if self.sock is None or self.stopping or self.held:
            return
        stacks.register_supervisor()
        # the supervisor is alive: /livez says so from the first request (an upgraded
        # bastion's admin answers at once, on the inherited socket, before the
        # supervisor's loop first turns)
        self.board.beat()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(self, close_fds)
        self.pid = pid

    def reaped(self, pid: int, status: int) -> bool:
        """Whether ``pid`` was the admin process (then it is restarted soon)."""
        if not pid or pid != self.pid:
            return False
        self.pid = 0
        if self.renewing:
            self.renewing = False
            self.restart_at = time.monotonic()  # at once, with the new settings
        elif not self.stopping:
            logger.warning("the admin process %s: restarting it", describe_status(status))
            self.restart_at = time.monotonic() + RESTART_DELAY
        return True

    def reconfigure(self, config: Config) -> None:
        """Take a reload's configuration: a new token (``token``, or ``token_file``'s
        line, read again) restarts the admin process with it, so that rotating a token
        by reload works. (A new ``bind`` takes a restart of bastion: the reload says
        so.) Connections wait in the socket's queue the moment it takes."""
        try:
            token = read_token(config.admin)
        except ConfigError as exc:
            logger.error("SIGHUP: %s: the admin listener keeps its token", exc)
            return
        self.config = config
        if token == self.token:
            return
        self.token = token
        logger.info("SIGHUP: a new admin token: restarting the admin process with it")
        if self.pid and not self.stopping:
            self.renewing = True
            self._tell_to_stop()

    def due(self, close_fds: list[int]) -> None:
        """Restart the admin process if it died and its delay is over."""
        if not self.pid and self.restart_at and time.monotonic() >= self.restart_at:
            self.restart_at = 0.0
            try:
                self.start(close_fds)
            except OSError as exc:
                logger.error("cannot start the admin process: %s", exc)
                self.restart_at = time.monotonic() + RESTART_DELAY

    def hand_over(self) -> None:
        """The new bastion of an upgrade took over (this one drains): its admin process
        answers on the shared socket from now on, so this one's stops, for good, and
        probes and scrapes never alternate between the two."""
        self.stopping = True
        self.restart_at = 0.0
        self._tell_to_stop()

    def _tell_to_stop(self) -> None:
        """STOP_SIGNAL to the admin process, if it runs (reaped later, in the loop)."""
        if self.pid:
            try:
                os.kill(self.pid, STOP_SIGNAL)
            except ProcessLookupError:
                pass

    def retiring(self, slot: int) -> None:
        self.board.set_state(slot, RETIRING)

    def stop(self) -> None:
        self.stopping = True
        if self.pid:
            try:
                os.kill(self.pid, STOP_SIGNAL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.board.close()


# -- the admin process ------------------------------------------------------------------
def _run_child(side: AdminSide, close_fds: list[int]) -> NoReturn:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # A process manager may signal the whole group (systemd's KillMode=control-group,
        # Ctrl-C in a terminal): the admin side must go on answering "draining" until
        # the supervisor itself stops it, with STOP_SIGNAL, after the workers.
        for sig in (
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGQUIT,
            signal.SIGHUP,
            signal.SIGTTIN,
            signal.SIGTTOU,
            signal.SIGUSR2,
        ):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        setup_worker_logging(side.config.log)
        assert side.sock is not None
        server = AdminServer(side.board, side.sock, side.token, os.getppid(), side.stacks_dir)
        import uvloop

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())
        code = 0
    except BaseException:
        try:
            logger.error("admin process failed:\n%s", traceback.format_exc())
        except BaseException:
            pass
    finally:
        try:
            flush_logging()
        finally:
            os._exit(code)


class AdminServer:
    def __init__(
        self, board: Board, sock: socket.socket, token: str, parent: int, stacks_dir: str = ""
    ) -> None:
        self.board = board
        self.stacks_dir = stacks_dir
        self.sock = sock
        self.token = token.encode()
        self.parent = parent
        self.snapshots = Snapshots(board)
        self.listeners: set[asyncio.Queue[bytes]] = set()
        self.stop = asyncio.Event()
        self.clients: set[asyncio.Task[None]] = set()  # the connections being answered

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(STOP_SIGNAL, self.stop.set)
        server = await asyncio.start_server(self._client, sock=self.sock)
        ticker = asyncio.ensure_future(self._tick())
        try:
            await self.stop.wait()
        finally:
            ticker.cancel()
            server.close()
            for q in list(self.listeners):
                q.put_nowait(b"")
            # Answer the connections already taken before going: during an upgrade
            # (SIGUSR2) the next bastion's admin process shares the socket, and a probe
            # this one accepted must get its answer, not a reset.
            if self.clients:
                await asyncio.wait(list(self.clients), timeout=DRAIN_TIMEOUT)

    async def _tick(self) -> None:
        """Once a second: watch the supervisor, and push a snapshot to the dashboards."""
        while True:
            if os.getppid() != self.parent:
                self.stop.set()  # the supervisor is gone
                return
            if self.listeners:
                data = self._event()
                for q in list(self.listeners):
                    if q.qsize() < 5:  # a dashboard that does not read loses frames
                        q.put_nowait(data)
            await asyncio.sleep(SSE_EVERY)

    def _event(self) -> bytes:
        snap = self.snapshots.take()
        return b"data: " + json.dumps(snap, separators=(",", ":")).encode() + b"\n\n"

    def _authorized(self, headers: dict[bytes, bytes], query: dict[str, list[str]]) -> bool:
        if not self.token:
            return True
        given = headers.get(b"authorization", b"")
        if given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:].strip(), self.token):
            return True
        # a browser's EventSource cannot send headers: the dashboard passes ?token=
        values = query.get("token") or [""]
        return bool(values[0]) and hmac.compare_digest(values[0].encode(), self.token)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.clients.add(task)
            task.add_done_callback(self.clients.discard)
        try:
            await self._answer(reader, writer)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.LimitOverrunError:
            pass
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        if len(head) > MAX_HEAD:
            return await self._send(writer, 431, b"request head too large\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return await self._send(writer, 400, b"bad request\n")
        method, target = parts[0], parts[1].decode("latin-1")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        url = urlsplit(target)
        path = url.path
        query = parse_qs(url.query)
        if method not in (b"GET", b"HEAD"):
            return await self._send(writer, 405, b"method not allowed\n", extra=b"Allow: GET\r\n")
        head_only = method == b"HEAD"
        if path not in _OPEN_PATHS and not self._authorized(headers, query):
            return await self._send(
                writer,
                401,
                b"a bearer token is required\n",
                extra=b'WWW-Authenticate: Bearer realm="bastion admin"\r\n',
            )
        if path == "/livez":
            alive = supervisor_alive(self.board, LIVE_WITHIN)
            return await self._send(
                writer, 200 if alive else 503, b"ok\n" if alive else b"stalled\n", head_only
            )
        if path == "/readyz":
            r = read_board(self.board, with_proc=False)
            if is_ready(r):
                return await self._send(writer, 200, b"ready\n", head_only)
            text = b"draining\n" if r.header[2] else b"starting\n"
            return await self._send(writer, 503, text, head_only)
        if path == "/metrics":
            body = render_metrics(self.board).encode()
            return await self._send(
                writer, 200, body, head_only, ctype=b"text/plain; version=0.0.4; charset=utf-8"
            )
        if path == "/events":
            return await self._events(writer)
        if path == "/snapshot":
            body = json.dumps(self.snapshots.current or self.snapshots.take()).encode()
            return await self._send(writer, 200, body, head_only, ctype=b"application/json")
        if path == "/debug/stacks" and self.stacks_dir:
            body = (await self._stacks()).encode()
            return await self._send(writer, 200, body, head_only)
        found = _FILES.get(path)
        if found is not None:
            file_name, file_type = found
            data = resources.files("bastion.observe.dashboard").joinpath(file_name).read_bytes()
            return await self._send(writer, 200, data, head_only, ctype=file_type.encode())
        return await self._send(writer, 404, b"not found\n", head_only)

    async def _stacks(self) -> str:
        """Every process's Python stacks: the supervisor's, then each live worker's."""
        board = self.board
        ints = board.ints
        processes = [(f"supervisor (pid {self.parent})", self.parent, stacks.SUPERVISOR)]
        for slot in range(board.slots):
            b = board.base(slot)
            state, pid = ints[b + STATE], ints[b + PID]
            if state != FREE and pid > 0:
                title = f"worker {slot} (pid {pid}, {STATE_NAMES[state]})"
                processes.append((title, pid, str(pid)))
        return await stacks.collect(self.stacks_dir, processes)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        head_only: bool = False,
        ctype: bytes = b"text/plain; charset=utf-8",
        extra: bytes = b"",
    ) -> None:
        reason = {200: b"OK", 401: b"Unauthorized", 404: b"Not Found", 503: b"Unavailable"}
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\nConnection: close\r\n%s\r\n"
            % (status, reason.get(status, b"Error"), ctype, len(body), extra)
        )
        writer.write(head if head_only else head + body)
        await writer.drain()

    async def _events(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-store\r\nConnection: close\r\n\r\nretry: 1000\n\n"
        )
        q: asyncio.Queue[bytes] = asyncio.Queue()
        self.listeners.add(q)
        try:
            current = self.snapshots.current
            first = json.dumps(current, separators=(",", ":")).encode() if current else None
            q.put_nowait(b"data: " + first + b"\n\n" if first else self._event())
            while True:
                data = await q.get()
                if not data:
                    return
                writer.write(data)
                await asyncio.wait_for(writer.drain(), 30.0)
        finally:
            self.listeners.discard(q)
