"""One HTTP/1.1 connection to an upstream server: the client protocol.

The request goes out through :meth:`UpstreamConnection.write`; the response is parsed
with httptools' ``HttpResponseParser`` and pushed, as it arrives, to the
:class:`ResponseSink` of the request in progress (the proxy handler), which writes it on
to its client. Nothing is queued here: when the client reads slowly, the sink pauses
this connection's reading (:meth:`pause_reading`) until its client has drained.

What the parser (llhttp, strict) refuses, and what is checked here on top, fails the
response with :class:`UpstreamProtocolError` and closes the connection: a bad status
line, Content-Length with Transfer-Encoding, several different Content-Lengths, a head
larger than the limit, bytes arriving when no request is waiting (a response nobody
asked for would be spliced onto the next one).

A request that asks to switch protocols (``start(..., upgrade=True)``) may be answered
``101``: the sink gets that head, joins this connection to its client's through a
:class:`~bastion.upstream.tunnel.Tunnel` (:attr:`UpstreamConnection.tunnel`), and every
byte after the head goes to the tunnel unparsed.
"""

from __future__ import annotations

import asyncio
import ssl
import typing
from typing import Final, Protocol

import httptools

from bastion.config.schema import UpstreamConfig
from bastion.observe.logging import logger
from bastion.upstream.server import Server

if typing.TYPE_CHECKING:
    from bastion.upstream.tunnel import Tunnel

__all__ = [
    "ResponseSink",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamProtocolError",
    "client_tls_context",
]

#: the largest response head accepted (status line and headers); nginx's
#: proxy_buffer_size is one page (4-8 KiB), Envoy's max_request_headers_kb 60 KiB
MAX_HEAD: Final = 64 * 1024
MAX_HEADERS: Final = 200


class _NoConnection:
    """What the parser of a connection not yet made, or already gone, reports to."""


#: the parser of a connection not made yet or gone: a connection's own parser calls its
#: bound methods (a reference cycle), so it exists only while the connection does
_NO_PARSER: Final = httptools.HttpResponseParser(_NoConnection())


class UpstreamError(Exception):
    """The upstream could not be reached, or stopped answering."""


class UpstreamProtocolError(UpstreamError):
    """The upstream's response is not valid HTTP/1.1 (or not one bastion passes on)."""


def client_tls_context(name: str, cfg: UpstreamConfig) -> ssl.SSLContext:
    """The TLS settings for the ``https://`` servers of upstream ``name``.

    Verification is on unless ``tls_verify = false``: the certificate must chain to the
    system's CAs (or ``tls_ca_file``'s) and name the server (``tls_server_name``, or the
    host of its URL). TLS 1.2 at least; ALPN offers only ``http/1.1``. Raises
    :class:`OSError` or :class:`ssl.SSLError` for files that cannot be loaded.
    """
    if cfg.tls_verify:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca_file or None)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        logger.warning(
            "upstream %s: tls_verify = false: the servers' certificates are NOT checked, "
            "anyone on the path can read and change this traffic",
            name,
        )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if cfg.tls_certfile:
        ctx.load_cert_chain(cfg.tls_certfile, cfg.tls_keyfile or None)
    return ctx


class ResponseSink(Protocol):
    """The receiver of one response (the proxy handler's request state)."""

    def response_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """A response head (1xx ones too, before the final one)."""

    def response_body(self, data: bytes) -> None:
        """Part of the body, as it arrives."""

    def response_end(self) -> None:
        """The response is complete."""

    def response_failed(self, exc: UpstreamError) -> None:
        """The connection broke or the response was malformed."""


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_cl",
        "_connection_tokens",
        "_head_bytes",
        "_headers",
        "_no_body",
        "_paused",
        "_te",
        "_until_close",
        "_upgrade",
        "_write_waiter",
        "closed",
        "idle_since",
        "parser",
        "reusable",
        "server",
        "sink",
        "trailers",
        "transport",
        "tunnel",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        # made with the connection (a connection refused is never made: it must leave no
        # cycle behind either)
        self.parser = _NO_PARSER
        self.sink: ResponseSink | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._cl: bytes | None = None
        self._te = False
        self._until_close = False
        self._no_body = False
        self._connection_tokens: bytes = b""
        self._paused = False
        self._write_waiter: asyncio.Future[None] | None = None
        self._upgrade = False  # the request in progress asked to switch protocols
        #: set once a 101 joined this connection to its client's
        self.tunnel: Tunnel | None = None
        #: the trailer fields of the response that just ended (a chunked body's)
        self.trailers: list[tuple[bytes, bytes]] = []

    # -- a request on this connection --------------------------------------------------
    def start(self, sink: ResponseSink, head_request: bool, upgrade: bool = False) -> None:
        """The next response goes to ``sink``; ``head_request``: it answers a HEAD;
        ``upgrade``: the request asks to switch protocols (a 101 may come)."""
        self.sink = sink
        self.reusable = False
        self._no_body = head_request
        self._upgrade = upgrade
        self._headers = []
        self._head_bytes = 0
        self._cl = None
        self._te = False
        self._until_close = False
        if self.trailers:
            self.trailers = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    @property
    def writing_paused(self) -> bool:
        return self._write_waiter is not None

    async def drain(self) -> None:
        """Wait until the upstream takes what was written (raises if it went away)."""
        waiter = self._write_waiter
        if waiter is not None:
            await asyncio.shield(waiter)
        if self.closed:
            raise UpstreamError("the upstream closed the connection")

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        # whoever closes it is done with the response in progress: the connection's end,
        # reported later by the transport, must not reach a sink that moved on (a retry
        # on another connection)
        self.sink = None
        if not self.closed:
            self.closed = True
            self.server.open_connections -= 1
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.sink = None  # as in close()
        if not self.closed:
            self.closed = True
            self.server.open_connections -= 1
            if self.transport is not None:
                self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)
        self.parser = httptools.HttpResponseParser(self)
        self.server.open_connections += 1

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.from_upstream(data)
            return
        if self.sink is None:
            # nothing was asked: a late or unsolicited response must not meet the next
            # request
            self.abort()
            self._drop_from_pool()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # the 101's head ended at this offset: the rest is the new protocol's
            tunnel = self.tunnel
            if tunnel is None:
                self._fail(UpstreamProtocolError("an upgrade nobody asked for"))
                return
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            if offset < len(data):
                tunnel.from_upstream(data[offset:])
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"malformed response: {exc}"))
        except UpstreamProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        tunnel = self.tunnel
        if tunnel is not None:
            return tunnel.upstream_eof_received()
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._lost(exc)
        finally:
            self.parser = _NO_PARSER  # freed now, not at the next garbage collection

    def _lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        if not was_closed:
            self.server.open_connections -= 1
        waiter = self._write_waiter
        if waiter is not None:
            self._write_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.upstream_lost()
            return
        sink = self.sink
        if sink is None:
            self._drop_from_pool()
            return
        if self._until_close:
            self.sink = None
            sink.response_end()  # a response delimited by the end of the connection
            return
        self.sink = None
        reason = f"the upstream closed the connection ({exc})" if exc else None
        sink.response_failed(UpstreamError(reason or "the upstream closed the connection"))

    def pause_writing(self) -> None:
        if self._write_waiter is None:
            self._write_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter = self._write_waiter
        if waiter is not None:
            self._write_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.sink is None:
            raise UpstreamProtocolError("a response nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD or len(self._headers) >= MAX_HEADERS:
            raise UpstreamProtocolError("the response head is too large")
        name = name.lower()
        if name == b"content-length":
            if self._cl is not None and self._cl != value:
                raise UpstreamProtocolError("several different Content-Length headers")
            self._cl = value
        elif name == b"transfer-encoding":
            if self._te or value.strip().lower() != b"chunked":
                # (nginx answers 502 too): a coding under "chunked" (gzip, chunked)
                # would reach the client undeclared once the framing is redone, and
                # "identity" or a close-delimited coding has no framing to redo
                raise UpstreamProtocolError("a Transfer-Encoding other than chunked")
            self._te = True
        elif name == b"connection":
            self._connection_tokens += b"," + value.lower()
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if self._cl is not None and self._te:
            raise UpstreamProtocolError("both Content-Length and Transfer-Encoding")
        headers = self._headers
        self._headers = []
        self._head_bytes = 0
        sink = self.sink
        assert sink is not None
        if status == 101 or self.parser.should_upgrade():
            if status != 101 or not self._upgrade:
                raise UpstreamProtocolError("an upgrade nobody asked for")
            if not self.parser.should_upgrade():
                # RFC 9110 7.8: a 101 names the new protocol in Upgrade, listed in
                # Connection. Without them llhttp still stops after the head but reports
                # it as a parse error, which cut the tunnel just after the client had
                # its 101 (and lost any bytes sent with the head): refused before.
                raise UpstreamProtocolError("a 101 without Upgrade and Connection: upgrade")
            # the sink takes the client's connection over and sets self.tunnel (or
            # closes this connection when it cannot)
            self.sink = None
            sink.response_head(status, headers)
            return
        if status < 200:
            self._cl = None
            self._te = False
            sink.response_head(status, headers)
            return
        bodiless = self._no_body or status == 204 or status == 304
        if not bodiless and self._cl is None and not self._te:
            self._until_close = True
        sink.response_head(status, headers)
        if self._no_body:
            # a HEAD's answer ends with its head; llhttp would wait for the body its
            # Content-Length announces, so this connection is not used again
            self.sink = None
            self._connection_tokens = b""
            self.close()
            sink.response_end()

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.response_body(body)

    def on_message_complete(self) -> None:
        sink = self.sink
        if sink is None:
            return  # also the 101 of an upgrade: the tunnel has the connection
        if self.parser.get_status_code() < 200:
            return  # an informational answer: the final one follows
        keep = (
            not self._until_close
            and self.parser.should_keep_alive()
            and self._connection_tokens.find(b"close") < 0
        )
        self._connection_tokens = b""
        self.sink = None
        self.reusable = keep
        if self._headers:  # after the head, on_header gets the trailer fields
            self.trailers = self._headers
            self._headers = []
        sink.response_end()

    # -- internals ---------------------------------------------------------------------
    def _fail(self, exc: UpstreamError) -> None:
        sink = self.sink
        self.sink = None
        self.abort()
        if sink is not None:
            sink.response_failed(exc)

    def _drop_from_pool(self) -> None:
        idle = self.server.idle
        for i in range(len(idle)):
            if idle[i] is self:
                del idle[i]
                break
