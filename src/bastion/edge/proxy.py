"""The ``proxy`` route handler: forward the request to an upstream server, stream the
response back.

For each request a :class:`_Forward` runs as a worker task: it chooses a server
(:mod:`bastion.upstream.group`), borrows a pooled connection or opens one, writes the
rewritten request head, streams the body with backpressure both ways, and receives the
response through the connection's callbacks (it is the connection's
:class:`~bastion.upstream.connection.ResponseSink`), writing it to the client as it
arrives; when the client reads slowly the upstream connection stops being read.

Rewriting the heads, both ways, is :mod:`bastion.edge.proxy_headers`; the request id
goes back to the client with ``response_request_id``.

Failures: a connect error, a timeout before the response head, a malformed response or
a status of ``fail_statuses`` (any 5xx by default) counts against the server (passive
ejection). A request that got no response
byte is tried once more on another server (``retries``) when it is idempotent and had
no body, or when the connection was never made; anything else gets 502 (504 for a
timeout, 503 when no server can take it) with a short plain-text body, or, once the
response has started, a cut connection.

A request that asks to switch to a protocol the route passes (``upgrades``: WebSocket
unless configured) is forwarded with its ``Connection: upgrade`` and ``Upgrade``
headers; when the upstream answers ``101`` the client's connection is taken over and
joined to the upstream connection byte for byte
(:class:`~bastion.upstream.tunnel.Tunnel`). Any other ``Upgrade`` is dropped (an h2c
upgrade would carry HTTP/2 requests past the routes and their rules).

``TRACE`` is answered 405 and never forwarded, as nginx does: the upstream's echo would
show the client the fields bastion adds to its request.

A chunked response's trailer fields go to a client that sent ``TE: trailers`` (minus
those that must not be trailers), in the last chunk. With ``buffer_request`` the body is
read whole first (:mod:`bastion.edge.proxy_buffer`), then forwarded.
"""

from __future__ import annotations

import asyncio
from typing import IO, Final

from bastion.config.schema import ProxyConfig, UpstreamConfig
from bastion.edge.proxy_buffer import DiskThread, buffer_body, send_buffered_body
from bastion.edge.proxy_headers import (
    HeaderRewrite,
    connection_names,
    last_chunk,
    passable_request_trailers,
    passable_trailers,
    with_request_id,
)
from bastion.edge.types import RouteMatch
from bastion.observe.logging import logger
from bastion.observe.requestid import request_id as make_request_id
from bastion.protocol.errors import reason
from bastion.protocol.fields import accepts_trailers
from bastion.protocol.types import ClientDisconnected, Exchange, InvalidResponse
from bastion.tasks import WorkerTasks
from bastion.upstream.connection import UpstreamConnection, UpstreamError
from bastion.upstream.group import NoServer, Upstream, cookie_value
from bastion.upstream.server import Server
from bastion.upstream.tunnel import Tunnel

__all__ = ["ProxyHandler"]

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: ``fail_statuses``: the response statuses that count against a server
FAIL_STATUSES: Final = {
    "5xx": frozenset(range(500, 600)),
    "gateway": frozenset((502, 503, 504)),
    "none": frozenset[int](),
}
#: the sticky cookie lasts the browser session and is not for scripts
STICKY_ATTRS: Final = b"; Path=/; HttpOnly; SameSite=Lax"


class _Timeout(UpstreamError):
    pass


def _error(exchange: Exchange, status: int, upstream: str, request_id: bool = False) -> None:
    """Answer ``status`` for a failure of ``upstream`` (logged by the caller with what
    went wrong: the client learns no server address nor any detail of the failure, as
    with nginx's error pages)."""
    if exchange.response_started:
        exchange.fail(status=status)  # answered with it when nothing reached the client yet
        return
    body = f"{status} {reason(status)} (upstream {upstream})\n".encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if request_id:
        headers.append((b"x-request-id", make_request_id(exchange.head).encode("ascii")))
    exchange.start_response(status, headers)
    exchange.finish(body if exchange.head.method != "HEAD" else b"")


def _trace_refused(exchange: Exchange) -> None:
    body = b"405 Method Not Allowed\n"
    exchange.start_response(
        405,
        [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        ],
    )
    exchange.finish(body)


class ProxyHandler:
    """The handler of a route's ``proxy`` table (a :class:`~bastion.edge.types.Lifecycle`)."""

    def __init__(
        self,
        cfg: ProxyConfig,
        upstream_cfg: UpstreamConfig,
        tasks: WorkerTasks,
        prefix: str = "",
        upstream: Upstream | None = None,
        forwarded_header: str = "x-forwarded",
    ) -> None:
        self.cfg = cfg
        #: whether this handler starts and stops its group (not when the site's
        #: :class:`~bastion.upstream.registry.Upstreams` shares it between routes)
        self.owns_upstream = upstream is None
        self.upstream = upstream if upstream is not None else Upstream(cfg.upstream, upstream_cfg)
        self.ucfg = upstream_cfg
        # the group's settings read on every request, as native attributes
        self.retries = upstream_cfg.retries
        self.timeout = upstream_cfg.timeout
        self.first_byte_timeout = upstream_cfg.first_byte_timeout
        self.read_timeout = upstream_cfg.read_timeout
        #: the response statuses that count against a server (``fail_statuses``)
        self.fail_statuses = FAIL_STATUSES[upstream_cfg.fail_statuses]
        self.tasks = tasks
        #: how this route rewrites the heads it passes on
        self.heads = HeaderRewrite(
            prefix.rstrip("/").encode() if cfg.strip_prefix else b"",
            cfg.host.encode("latin-1") if cfg.host else b"",
            forwarded_header == "forwarded",
        )
        #: the request id goes back to the client (``response_request_id``)
        self.request_id_back = cfg.response_request_id
        #: the Upgrade values passed on (``upgrades``), lower-cased
        self.upgrades = frozenset(u.strip().lower().encode("latin-1") for u in cfg.upgrades)
        #: the thread that writes and reads buffered bodies' temporary files
        self.disk = DiskThread()

    @property
    def prefix(self) -> bytes:
        """The route prefix taken off the path (``strip_prefix``), or b""."""
        return self.heads.prefix

    async def startup(self) -> None:
        if self.owns_upstream:
            self.upstream.start(self.tasks)

    async def shutdown(self) -> None:
        if self.owns_upstream:
            self.upstream.stop()
        self.disk.shutdown()

    def __call__(self, exchange: Exchange, match: RouteMatch) -> None:
        if exchange.head.method == "TRACE":
            # as nginx does: a TRACE echoed by the upstream would show the client what
            # bastion adds to its request (the identity header, forwarding fields)
            _trace_refused(exchange)
            return
        forward = _Forward(self, exchange)
        if forward.has_body and self.cfg.buffer_request:
            self.tasks.spawn(forward.buffer_then_forward())
        else:
            forward.next_try()


class _Forward:
    """One request through the proxy: its tries and the response's way back.

    A request without a body that finds an idle pooled connection is sent from the
    protocol's callback and answered from the upstream connection's callbacks: no task,
    no timer. A task runs only to open a connection, to stream a request body, or to
    wait for a slow client to drain. Deadlines (first byte, read) are checked by the
    group's sweep (:meth:`Upstream.expired`).
    """

    __slots__ = (
        "body",
        "body_file",
        "body_size",
        "conn",
        "deadline",
        "exchange",
        "finished",
        "handler",
        "has_body",
        "head",
        "last",
        "last_status",
        "response_fields",
        "retryable",
        "sending",
        "sent_at",
        "server",
        "started",
        "status",
        "tried",
        "tries_left",
        "until",
        "upgrade",
        "upstream",
    )

    def __init__(self, handler: ProxyHandler, exchange: Exchange) -> None:
        self.handler = handler
        self.upstream = handler.upstream
        self.exchange = exchange
        self.conn: UpstreamConnection | None = None
        self.server: Server | None = None
        self.tried: list[Server] | None = None
        #: the last try's error, as text: the exception itself would hold its traceback,
        #: whose frames hold this forward (a cycle only the garbage collector breaks,
        #: keeping the request and a spilled body's file until it runs)
        self.last = ""
        self.last_status = 502  # the status of the last try's failure (504: a timeout)
        self.started = False  # a response byte arrived
        self.finished = False
        self.sending = False  # a task is streaming the request body
        self.status = 0
        #: the upstream response head's fields (what its Connection header names does
        #: not pass as a trailer either)
        self.response_fields: list[tuple[bytes, bytes]] = []
        self.sent_at = 0.0
        #: when the upstream must have sent something (0: no deadline now)
        self.deadline = 0.0
        self.head = head = exchange.head
        length = head.header(b"content-length")
        self.has_body = (length is not None and length != b"0") or (
            head.header(b"transfer-encoding") is not None
        )
        self.retryable = not self.has_body and head.method in IDEMPOTENT
        #: the request body read whole first (``buffer_request``): its first bytes in
        #: memory, the rest in a temporary file; ``body_size`` < 0: not buffered
        self.body = b""
        self.body_file: IO[bytes] | None = None
        self.body_size = -1
        #: the protocol the client asks to switch to (b"": none, it cannot switch, or
        #: the route does not pass that protocol: then served as plain HTTP)
        self.upgrade = b""
        if exchange.can_upgrade:
            upgrade = head.header(b"upgrade") or b""
            if upgrade.strip().lower() in handler.upgrades:
                self.upgrade = upgrade
        self.tries_left = handler.retries + 1
        #: the end of the total ``timeout`` across tries (0: none)
        self.until = 0.0

    # -- request buffering (bastion.edge.proxy_buffer) --------------------------------
    async def buffer_then_forward(self) -> None:
        """Read the whole request body, then forward the request."""
        try:
            buffered = await buffer_body(self)
        except ClientDisconnected:
            self.drop_body()
            return  # the client left before its body was whole: nobody to answer
        if buffered:
            # a body that can be sent again: idempotent methods may be retried
            self.retryable = self.head.method in IDEMPOTENT
            self.next_try()

    def drop_body(self) -> None:
        self.body = b""
        spill = self.body_file
        if spill is not None:
            self.body_file = None
            self.handler.disk.close_file(spill)

    async def upstream_drain(self, conn: UpstreamConnection) -> None:
        """Wait until ``conn`` takes more of the request body, ``write_timeout`` at most
        (then :class:`_Timeout`: a 504)."""
        if conn.writing_paused:
            timeout = self.handler.ucfg.write_timeout
            try:
                async with asyncio.timeout(timeout):
                    await conn.drain()
            except TimeoutError:
                raise _Timeout(f"timed out sending the request body ({timeout:g} s)") from None

    # -- tries -----------------------------------------------------------------------
    def next_try(self) -> None:
        upstream = self.upstream
        self.tries_left -= 1
        now = upstream.now()
        if self.tried is None:  # the first try
            upstream.budget.request(now)
            if self.handler.timeout:
                self.until = now + self.handler.timeout
        try:
            server = None
            if upstream.sticky_cookie:
                server = upstream.sticky_server(self.head, now, self.tried)
            if server is None:
                key = upstream.key(self.head) if upstream.keyed else b""
                server = upstream.choose(now, self.tried, key)
        except NoServer:
            self.finished = True
            self.drop_body()
            back = self.handler.request_id_back
            if self.last:  # the other servers are out: the last error stands
                logger.warning("upstream %s: %s (no other server to try)", upstream.name, self.last)
                _error(self.exchange, self.last_status, upstream.name, back)
            else:
                unlogged = upstream.no_server(upstream.now())
                if unlogged >= 0:
                    logger.warning(
                        "upstream %s: no server can take requests%s",
                        upstream.name,
                        f" ({unlogged} more in the second before)" if unlogged else "",
                    )
                _error(self.exchange, 503, upstream.name, back)
            return
        self.server = server
        self.head.upstream = server.label  # for the access log
        server.in_flight += 1
        if server.in_flight > server.peak_in_flight:
            server.peak_in_flight = server.in_flight
        server.requests += 1
        self.started = False
        conn = upstream.idle_connection(server)
        if conn is not None and not self.has_body:
            self.send_head(conn, b"")
            self.request_sent()
        else:
            self.handler.tasks.spawn(self.connect_and_send(server, conn))

    def send_head(self, conn: UpstreamConnection, framing: bytes) -> None:
        exchange = self.exchange
        method = self.head.method
        self.conn = conn
        conn.start(self, method == "HEAD", bool(self.upgrade))
        if not framing and (method == "POST" or method == "PUT" or method == "PATCH"):
            framing = b"content-length: 0\r\n"
        conn.write(
            self.handler.heads.request_head(exchange, framing, self.upgrade, conn.server.authority)
        )

    def request_sent(self) -> None:
        upstream = self.upstream
        self.sent_at = now = upstream.now()
        if not self.started and not self.finished:
            self.deadline = now + self.handler.first_byte_timeout
            if self.until and self.until < self.deadline:
                self.deadline = self.until
        upstream.active.add(self)

    async def connect_and_send(self, server: Server, conn: UpstreamConnection | None) -> None:
        if conn is None:
            try:
                conn = await self.upstream.connect(server)
            except UpstreamError as exc:
                self.try_failed(exc, reached=False)
                return
        if self.finished or self.exchange.disconnected:
            self.give_up(conn)
            return
        if not self.has_body:
            self.send_head(conn, b"")
            self.request_sent()
            return
        try:
            if self.body_size >= 0:
                await send_buffered_body(self, conn)
            else:
                await self.send_body(conn)
        except UpstreamError as exc:
            if not self.finished:
                self.try_failed(exc, reached=True)
            return
        except ClientDisconnected:
            # the client left in the middle of its body: nobody to answer (and nothing
            # to log: this task's end is not awaited)
            if not self.finished:
                self.give_up(conn)
            return
        except asyncio.CancelledError:
            if not self.finished:
                self.give_up(conn)
            raise
        finally:
            self.sending = False
        if not self.finished:
            self.request_sent()

    async def send_body(self, conn: UpstreamConnection) -> None:
        exchange = self.exchange
        length = exchange.head.header(b"content-length")
        chunked = length is None
        if chunked:
            self.send_head(conn, b"transfer-encoding: chunked\r\n")
        else:
            self.send_head(conn, b"content-length: %s\r\n" % length)
        self.sending = True
        while not self.finished:
            data, more = await exchange.receive_body()
            if self.finished:
                break  # the upstream answered (or failed) before taking the whole body
            if data:
                if chunked:
                    conn.write(b"%x\r\n" % len(data))
                    conn.write(data)
                    conn.write(b"\r\n")
                else:
                    conn.write(data)
                if conn.writing_paused:  # (checked here too: no coroutine per chunk)
                    await self.upstream_drain(conn)
            if not more:
                if chunked:
                    trailers = exchange.request_trailers
                    if trailers:
                        passable = passable_request_trailers(trailers, exchange.head)
                        conn.write(last_chunk(passable))
                    else:
                        conn.write(b"0\r\n\r\n")
                break

    # -- endings ---------------------------------------------------------------------
    def done_with_server(self) -> Server:
        self.finished = True
        self.deadline = 0.0
        self.upstream.active.discard(self)
        server = self.server
        assert server is not None
        server.in_flight -= 1
        return server

    def give_up(self, conn: UpstreamConnection | None) -> None:
        """The client went away: drop the upstream connection, answer nothing."""
        self.done_with_server()
        self.drop_body()
        if conn is not None:
            conn.abort()
        self.exchange.fail()

    def try_failed(self, exc: UpstreamError, *, reached: bool) -> None:
        upstream = self.upstream
        server = self.done_with_server()
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.abort()
        upstream.record_failure(server, upstream.now(), connected=reached)
        exchange = self.exchange
        if self.started or exchange.response_started:
            self.drop_body()
            logger.warning("upstream %s: %s (response cut)", server.label, exc)
            # the response's head may not have reached the client yet: then it gets 502
            # (the upstream's answer was bad) or 504 (it stopped coming), not 500
            exchange.fail(status=504 if isinstance(exc, _Timeout) else 502)
            return
        if (
            self.tries_left > 0
            and (self.retryable or not reached)
            and not exchange.disconnected
            and not (self.until and upstream.now() >= self.until)
            and upstream.budget.try_retry(upstream.now())
        ):
            self.last = str(exc)
            self.last_status = 504 if isinstance(exc, _Timeout) else 502
            if self.tried is None:
                self.tried = [server]
            else:
                self.tried.append(server)
            self.finished = False
            self.next_try()
            return
        self.drop_body()
        logger.warning("upstream %s: %s", server.label, exc)
        status = 504 if isinstance(exc, _Timeout) else 502
        _error(exchange, status, upstream.name, self.handler.request_id_back)

    def timed_out(self) -> None:
        timeout = self.handler.ucfg
        if self.started:
            exc = _Timeout(f"timed out reading the response ({timeout.read_timeout:g} s)")
        elif self.until and self.upstream.now() >= self.until:
            exc = _Timeout(f"no response within the upstream's timeout ({timeout.timeout:g} s)")
        else:
            exc = _Timeout(f"timed out waiting for the response ({timeout.first_byte_timeout:g} s)")
        self.try_failed(exc, reached=True)

    async def resume_after_drain(self, conn: UpstreamConnection) -> None:
        await self.exchange.drain()
        if self.finished:
            return
        if self.exchange.disconnected:
            self.give_up(conn)
            return
        self.deadline = self.upstream.now() + self.handler.read_timeout
        conn.resume_reading()

    # -- ResponseSink ----------------------------------------------------------------
    def response_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        # (an informational answer is not the response: its first-byte deadline stands,
        # and a timeout after it is still a 504)
        self.started = status >= 200 or status == 101
        exchange = self.exchange
        if status == 101:
            self.switch(headers)
            return
        if status < 200:
            if status != 100:  # the client had its 100 Continue from bastion
                try:
                    exchange.inform(status, self.client_headers(headers))
                except Exception:
                    pass
            return
        self.status = status
        self.response_fields = headers
        now = self.upstream.now()
        server = self.server
        assert server is not None
        server.observe_latency(now - self.sent_at, now)
        self.deadline = now + self.handler.read_timeout
        out = self.client_headers(headers)
        upstream = self.upstream
        if upstream.sticky_cookie and server.token != cookie_value(
            self.head, upstream.sticky_cookie
        ):
            out.append((b"set-cookie", upstream.sticky_cookie + b"=" + server.token + STICKY_ATTRS))
        exchange.start_response(status, out)

    def client_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """An upstream head's fields as the client gets them (final, informational or
        101): rewritten, with the request id when the route returns it."""
        out = self.handler.heads.response_headers(headers)
        if self.handler.request_id_back:
            out = with_request_id(out, self.head)
        return out

    def switch(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The upstream switched protocols: join the two connections."""
        upstream = self.upstream
        conn = self.conn
        self.conn = None
        now = upstream.now()
        server = self.done_with_server()
        server.observe_latency(now - self.sent_at, now)
        upstream.record_success(server)
        assert conn is not None
        protocol = b""
        for name, value in headers:
            if name == b"upgrade":
                protocol = value
        out = self.client_headers(headers)
        out.append((b"connection", b"upgrade"))
        out.append((b"upgrade", protocol or self.upgrade))
        tunnel = Tunnel(conn, self.handler.tasks, self.handler.cfg.tunnel_idle_timeout)
        try:
            flow = self.exchange.take_over(101, out, tunnel)
        except InvalidResponse as exc:
            conn.abort()
            self.exchange.fail(exc)
            return
        conn.tunnel = tunnel
        tunnel.start(flow)

    def response_body(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange.disconnected:
            self.give_up(self.conn)
            return
        exchange.write(data)
        conn = self.conn
        if exchange.writing_paused and conn is not None:
            conn.pause_reading()  # the client is slow: hold the upstream back
            self.deadline = 0.0  # waiting on the client is not the upstream's fault
            self.handler.tasks.spawn(self.resume_after_drain(conn))
        elif self.deadline:
            self.deadline = self.upstream.now() + self.handler.read_timeout

    def response_end(self) -> None:
        if self.finished:
            return
        upstream = self.upstream
        server = self.done_with_server()
        self.drop_body()
        conn = self.conn
        self.conn = None
        if self.status in self.handler.fail_statuses:
            upstream.record_failure(server, upstream.now())
        else:
            upstream.record_success(server)
        if conn is not None and conn.trailers:
            self.finish_with_trailers(conn.trailers)
        else:
            self.exchange.finish()
        if conn is not None:
            if self.sending:
                conn.close()  # answered before the whole body went out: not reusable
            else:
                upstream.release(conn, upstream.now())

    def finish_with_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        exchange = self.exchange
        trailers: list[tuple[bytes, bytes]] = []
        if accepts_trailers(exchange.head.headers):
            # hop-by-hop too: what the head's (or the trailer section's) Connection names
            dropped = connection_names(self.response_fields) | connection_names(fields)
            trailers = passable_trailers(fields, dropped)
        try:
            exchange.finish(b"", trailers)
        except InvalidResponse as exc:  # a field not fit to send: the body is whole
            logger.warning("upstream %s: trailers dropped: %s", self.upstream.name, exc)
            exchange.finish()

    def response_failed(self, exc: UpstreamError) -> None:
        if not self.finished:
            self.try_failed(exc, reached=True)
