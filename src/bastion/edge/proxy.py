"""The ``proxy`` route handler: forward the request to an upstream server, stream the
response back.

For each request a :class:`_Forward` runs as a worker task: it chooses a server
(:mod:`bastion.upstream.group`), borrows a pooled connection or opens one, writes the
rewritten request head, streams the body with backpressure both ways, and receives the
response through the connection's callbacks (it is the connection's
:class:`~bastion.upstream.connection.ResponseSink`), writing it to the client as it
arrives; when the client reads slowly the upstream connection stops being read.

Rewriting, both ways: hop-by-hop headers (those of RFC 9110 7.6.1 and every name the
``Connection`` header lists) are removed; ``X-Forwarded-For``, ``-Proto``, ``-Host`` and
``Forwarded`` are set from the request head, whose client, scheme and host were already
resolved through the trusted proxies (:mod:`bastion.protocol.forwarded`), so incoming
ones are never passed on as the client wrote them; ``Via`` is added; ``X-Request-ID`` is
passed on or generated; ``Host`` is passed on or replaced; with ``strip_prefix`` the
route's prefix leaves the path and is put back on a ``Location`` that starts with
``/``.

Failures: a connect error, a timeout before the response head, a 5xx or a malformed
response counts against the server (passive ejection). A request that got no response
byte is tried once more on another server (``retries``) when it is idempotent and had
no body, or when the connection was never made; anything else gets 502 (504 for a
timeout, 503 when no server can take it) with a short plain-text body, or, once the
response has started, a cut connection.
"""

from __future__ import annotations

import asyncio
import os
from typing import Final

from bastion.config.schema import ProxyConfig, UpstreamConfig
from bastion.edge.types import RouteMatch
from bastion.observe.logging import logger
from bastion.protocol.types import ClientDisconnected, Exchange
from bastion.tasks import WorkerTasks
from bastion.upstream.connection import UpstreamConnection, UpstreamError
from bastion.upstream.group import NoServer, Upstream
from bastion.upstream.server import Server

__all__ = ["ProxyHandler"]

#: RFC 9110 7.6.1, plus the old Keep-Alive and Proxy-Connection
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
    }
)
#: request headers bastion sets itself
_SET_BY_PROXY: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"host",
        b"expect",  # bastion answers 100 Continue itself and sends the body anyway
    }
)
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_VIA: Final = b"1.1 bastion"


class _Timeout(UpstreamError):
    pass


def _error(exchange: Exchange, status: int, text: str) -> None:
    if exchange.response_started:
        exchange.fail()
        return
    body = text.encode() + b"\n"
    exchange.start_response(
        status,
        [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ],
    )
    exchange.finish(body if exchange.head.method != "HEAD" else b"")


def _connection_names(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    names: list[bytes] = []
    for name, value in headers:
        if name == b"connection":
            names.extend(t.strip().lower() for t in value.split(b","))
    return frozenset(names)


class ProxyHandler:
    """The handler of a route's ``proxy`` table (a :class:`~bastion.edge.types.Lifecycle`)."""

    def __init__(
        self,
        cfg: ProxyConfig,
        upstream_cfg: UpstreamConfig,
        tasks: WorkerTasks,
        prefix: str = "",
        upstream: Upstream | None = None,
    ) -> None:
        self.cfg = cfg
        self.upstream = upstream if upstream is not None else Upstream(cfg.upstream, upstream_cfg)
        self.ucfg = upstream_cfg
        self.tasks = tasks
        self.prefix = prefix.rstrip("/").encode() if cfg.strip_prefix else b""
        self.host = cfg.host.encode("latin-1") if cfg.host else b""

    async def startup(self) -> None:
        self.upstream.start()

    async def shutdown(self) -> None:
        self.upstream.stop()

    def __call__(self, exchange: Exchange, match: RouteMatch) -> None:
        self.tasks.spawn(_Forward(self, exchange).run())

    # -- the request head sent upstream ------------------------------------------------
    def request_head(self, exchange: Exchange, framing: bytes) -> bytes:
        head = exchange.head
        path = head.raw_path
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :] or b"/"
            if path[:1] != b"/":
                path = b"/" + path
        target = path + b"?" + head.query_string if head.query_string else path
        out = [head.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        dropped = _connection_names(head.headers)
        host = b""
        request_id = b""
        for name, value in head.headers:
            if name in HOP_BY_HOP or name in dropped or name in _SET_BY_PROXY:
                if name == b"host":
                    host = value
                continue
            if name == b"content-length":
                continue  # the framing is ours
            if name == b"x-request-id":
                request_id = value
            out += (name, b": ", value, b"\r\n")
        if self.host:
            out += (b"host: ", self.host, b"\r\n")
        elif host:
            out += (b"host: ", host, b"\r\n")
        client = head.client[0] if head.client is not None else "unix"
        scheme = head.scheme.encode("ascii")
        out += (b"x-forwarded-for: ", client.encode("latin-1"), b"\r\n")
        out += (b"x-forwarded-proto: ", scheme, b"\r\n")
        quoted = f'"[{client}]"' if ":" in client else client
        forwarded = b"for=" + quoted.encode("latin-1") + b";proto=" + scheme
        if host:
            out += (b"x-forwarded-host: ", host, b"\r\n")
            forwarded += b';host="' + host.replace(b'"', b"") + b'"'
        out += (b"forwarded: ", forwarded, b"\r\n")
        out += (b"via: ", _VIA, b"\r\n")
        if not request_id:
            out += (b"x-request-id: ", os.urandom(16).hex().encode("ascii"), b"\r\n")
        out += (framing, b"\r\n")
        return b"".join(out)

    def response_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        dropped = _connection_names(headers)
        out: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            if name in HOP_BY_HOP or name in dropped:
                continue
            if name == b"location" and self.prefix and value[:1] == b"/" and value[:2] != b"//":
                value = self.prefix + value
            out.append((name, value))
        out.append((b"via", _VIA))
        return out


class _Forward:
    """One request through the proxy: its tries and the response's way back."""

    __slots__ = (
        "conn",
        "done",
        "exchange",
        "failure",
        "handler",
        "head_at",
        "loop",
        "sent_at",
        "started",
        "status",
        "waiter",
        "wants_drain",
    )

    def __init__(self, handler: ProxyHandler, exchange: Exchange) -> None:
        self.handler = handler
        self.exchange = exchange
        self.loop = asyncio.get_running_loop()
        self.conn: UpstreamConnection | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.failure: UpstreamError | None = None
        self.started = False  # a response byte arrived
        self.done = False
        self.wants_drain = False
        self.status = 0
        self.sent_at = 0.0
        self.head_at = 0.0

    # -- the task --------------------------------------------------------------------
    async def run(self) -> None:
        handler = self.handler
        upstream = handler.upstream
        exchange = self.exchange
        head = exchange.head
        length = head.header(b"content-length")
        has_body = (length is not None and length != b"0") or (
            head.header(b"transfer-encoding") is not None
        )
        retryable = head.method in IDEMPOTENT and not has_body
        tries_left = handler.ucfg.retries + 1
        tried: list[Server] = []
        last: UpstreamError | None = None
        while True:
            tries_left -= 1
            now = self.loop.time()
            try:
                server = upstream.choose(now, tried)
            except NoServer:
                if last is not None:  # the other servers are out: the last error stands
                    _error(exchange, 502, f"upstream {upstream.name}: {last}")
                else:
                    _error(
                        exchange, 503, f"no server of upstream {upstream.name} can take requests"
                    )
                return
            tried.append(server)
            server.in_flight += 1
            server.requests += 1
            reached = False
            try:
                self.reset()
                conn = await upstream.connect(server)
                reached = True
                self.conn = conn
                await self.send(conn, has_body)
                await self.receive(conn)
            except (ClientDisconnected, asyncio.CancelledError):
                if self.conn is not None:
                    self.conn.abort()
                raise
            except UpstreamError as exc:
                server.in_flight -= 1
                if self.conn is not None:
                    self.conn.abort()
                upstream.record_failure(server, self.loop.time())
                if self.started or exchange.response_started:
                    logger.warning("upstream %s: %s (response cut)", server.spec.label, exc)
                    exchange.fail()
                    return
                if tries_left > 0 and (retryable or not reached) and not exchange.disconnected:
                    last = exc
                    continue
                logger.warning("upstream %s: %s", server.spec.label, exc)
                status = 504 if isinstance(exc, _Timeout) else 502
                _error(exchange, status, f"upstream {upstream.name}: {exc}")
                return
            server.in_flight -= 1
            now = self.loop.time()
            if self.status >= 500:
                upstream.record_failure(server, now)
            else:
                upstream.record_success(server)
            server.observe_latency(self.head_at - self.sent_at, now)
            upstream.release(conn, now)
            return

    def reset(self) -> None:
        self.conn = None
        self.failure = None
        self.started = False
        self.done = False
        self.wants_drain = False

    async def send(self, conn: UpstreamConnection, has_body: bool) -> None:
        exchange = self.exchange
        head = exchange.head
        conn.start(self, head.method == "HEAD")
        handler = self.handler
        if not has_body:
            framing = b"content-length: 0\r\n" if head.method in ("POST", "PUT", "PATCH") else b""
            self.sent_at = self.loop.time()
            conn.write(handler.request_head(exchange, framing))
            return
        length = head.header(b"content-length")
        chunked = length is None
        framing = (
            b"transfer-encoding: chunked\r\n" if chunked else b"content-length: %s\r\n" % length
        )
        conn.write(handler.request_head(exchange, framing))
        timeout = handler.ucfg.write_timeout
        while True:
            if self.failure is not None or self.done:
                break  # the upstream answered (or failed) before taking the whole body
            data, more = await exchange.receive_body()
            if data:
                if chunked:
                    conn.write(b"%x\r\n" % len(data))
                    conn.write(data)
                    conn.write(b"\r\n")
                else:
                    conn.write(data)
                if conn.writing_paused:
                    await self.wait(conn.drain(), timeout, "sending the request body")
            if not more:
                if chunked:
                    conn.write(b"0\r\n\r\n")
                break
        self.sent_at = self.loop.time()

    async def receive(self, conn: UpstreamConnection) -> None:
        exchange = self.exchange
        cfg = self.handler.ucfg
        while not self.done:
            if self.failure is not None:
                raise self.failure
            if self.wants_drain:
                self.wants_drain = False
                await exchange.drain()
                if exchange.disconnected:
                    raise ClientDisconnected()
                conn.resume_reading()
                continue
            self.waiter = self.loop.create_future()
            timeout = cfg.read_timeout if self.started else cfg.first_byte_timeout
            what = "reading the response" if self.started else "waiting for the response"
            await self.wait(self.waiter, timeout, what)
        if self.failure is not None:
            raise self.failure

    async def wait(self, aw: asyncio.Future[None] | object, timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                await aw  # type: ignore[misc]
        except TimeoutError:
            raise _Timeout(f"timed out {what} ({timeout:g} s)") from None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- ResponseSink ----------------------------------------------------------------
    def response_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        exchange = self.exchange
        if status < 200:
            if status != 100:  # the client had its 100 Continue from bastion
                try:
                    exchange.inform(status, self.handler.response_headers(headers))
                except Exception:
                    pass
            return
        self.status = status
        self.head_at = self.loop.time()
        exchange.start_response(status, self.handler.response_headers(headers))

    def response_body(self, data: bytes) -> None:
        exchange = self.exchange
        exchange.write(data)
        if exchange.writing_paused and self.conn is not None:
            self.conn.pause_reading()
            self.wants_drain = True
            self.wake()

    def response_end(self) -> None:
        self.done = True
        self.exchange.finish()
        self.wake()

    def response_failed(self, exc: UpstreamError) -> None:
        self.failure = exc
        self.wake()
