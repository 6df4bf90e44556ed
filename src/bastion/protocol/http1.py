"""HTTP/1.1 server connections on asyncio/uvloop with httptools (llhttp).

One :class:`HTTP1Protocol` per connection parses requests into
:class:`~bastion.protocol.h1_exchange.H1Exchange` objects and hands them, one at a time
and in order, to the handler. Responses go back through the exchange; every byte in
or out goes through the connection's :class:`~bastion.protocol.flow.Flow`. Ambiguous or
malformed requests never reach the handler: they are answered with
400/408/413/414/417/431/501/505 and the connection is closed. A request that asks to
switch protocols can be handed over to a session (:meth:`H1Exchange.take_over`).

The connection is always in one phase of :mod:`bastion.protocol.h1_phase`. Nothing here
knows about routing or applications.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final, cast

from bastion.protocol.client_group import client_group
from bastion.protocol.errors import error_response
from bastion.protocol.flow import BODY, HANDOVER, PIPELINE, RESPONSES, Flow
from bastion.protocol.h1_exchange import STAGE_DISPATCH, H1Exchange
from bastion.protocol.h1_framing import Reject
from bastion.protocol.h1_phase import (
    BUSY,
    CLOSED,
    HEAD,
    IDLE,
    LINGER_SECONDS,
    LINGERING,
    NAMES,
    REFUSING,
    UPGRADED,
)
from bastion.protocol.h1_phase import (
    PARSING as _PHASES_PARSING,
)
from bastion.protocol.h1_reader import H1Reader
from bastion.protocol.head import RequestHead
from bastion.protocol.settings import ProtocolSettings
from bastion.protocol.state import (
    EVICT_CREDIT_RATE,
    EVICT_FRESH_WAIT,
    EVICT_MIN_WAIT,
    ConnectionTracker,
)
from bastion.protocol.tls import TLSInfo
from bastion.protocol.types import Handler, Session

__all__ = ["HTTP1Protocol", "ProtocolSettings"]

log: Final = logging.getLogger("bastion.error")
#: the phases in which the connection reads requests (a static of the compiled build)
PARSING: Final = _PHASES_PARSING
#: the clock of request timings (a static in the compiled build: no lookup in ``time``)
_clock: Final = time.perf_counter

_READ_ALL: Final = PIPELINE | BODY | RESPONSES
# pipelined requests answered in one go before the connection lets the others run
PIPELINE_TURN: Final = 16
# at a graceful stop, how long an idle connection stays open for a request its client
# may have sent already (more than a round trip and a client's turn-around); it is
# closed after that if nothing came
DRAIN_IDLE_GRACE: Final = 1.0


class HTTP1Protocol(H1Reader):
    """One HTTP/1.x connection."""

    __slots__ = (
        "_active",
        "_body_deadline",
        "_counted_as",
        "_dispatch_scheduled",
        "_dispatching",
        "_eof",
        "_handler",
        "_last",
        "_parsing",
        "_phase",
        "_pipeline",
        "_rate_base",
        "_rate_since",
        "_read_deadline",
        "_refusal",
        "_requests",
        "_session",
        "_since",
        "_upgrade_rest",
        "client",
        "loop",
        "scheme",
        "server",
        "tls",
    )

    def __init__(
        self, settings: ProtocolSettings, handler: Handler, tracker: ConnectionTracker
    ) -> None:
        loop = asyncio.get_event_loop()
        flow = Flow(
            loop, tracker, settings.send_timeout, settings.min_send_rate, settings.rate_grace
        )
        super().__init__(settings, tracker, flow)
        self._handler = handler
        self.loop = loop
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.scheme = "http"
        self.tls: TLSInfo | None = None
        flow.on_writable = self._writable
        self._phase = IDLE
        self._parsing: H1Exchange | None = None  # the request whose body is arriving
        self._active: H1Exchange | None = None  # the request being answered
        self._last: H1Exchange | None = None  # the request parsed last
        # parsed, waiting for their turn (a list: rarely more than one, and an empty deque
        # costs 600 bytes on every idle connection)
        self._pipeline: list[H1Exchange] = []
        self._dispatching = False
        self._dispatch_scheduled = False
        self._refusal = 0  # status of the error answer to send once earlier ones are out
        self._eof = False  # the client closed its side
        self._requests = 0
        self._read_deadline = 0.0  # of the phase (IDLE, HEAD, LINGERING)
        self._body_deadline = 0.0  # while a body arrives (_parsing is set)
        # the body's data-rate window: when bastion began reading it (0: not reading) and
        # how much of it had arrived then
        self._rate_since = 0.0
        self._rate_base = 0
        self._since = 0.0  # when the phase began (IDLE, HEAD, LINGERING)
        self._counted_as: str | None = None  # the address counted against its client cap
        self._upgrade_rest: bytes | None = None  # bytes after a head that asked to switch
        self._session: Session | None = None

    # -- state, for the tracker and for tests ------------------------------------------
    @property
    def phase(self) -> str:
        """The connection's phase by name (see :mod:`bastion.protocol.h1_phase`)."""
        return NAMES[self._phase]

    @property
    def closed(self) -> bool:
        return self._phase == CLOSED

    @property
    def is_idle(self) -> bool:
        return self._phase == IDLE and self._active is None and not self._pipeline

    @property
    def upgraded(self) -> bool:
        """True once a session (a WebSocket) has taken the connection over."""
        return self._phase == UPGRADED

    def _enter(self, phase: int, seconds: float) -> None:
        """Move to ``phase``; its read deadline is ``seconds`` from now."""
        self._phase = phase
        self._since = self.loop.time()  # (precise: eviction compares it within a second)
        self._read_deadline = self.tracker.now + seconds

    def peer(self) -> tuple[str, int] | None:
        return self.client

    # -- connection events -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.flow.attach(transport)
        if self.client is None:  # (a PROXY header may have given it already)
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple):
                self.client = (str(peer[0]), int(peer[1]))
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.scheme = "https"
            self.tls = TLSInfo(ssl_object)
            self.tracker.tls_handshakes += 1
        tracker = self.tracker
        sock = transport.get_extra_info("sockname")
        # one (host, port) object per listening address, not one per connection
        if self.server is None:
            self.server = tracker.servers.get(sock) if sock else None
        if self.server is None and sock:
            if isinstance(sock, tuple):
                self.server = (str(sock[0]), int(sock[1]))
            elif isinstance(sock, str):
                self.server = (sock, None)
            if len(tracker.servers) < 64:
                tracker.servers[sock] = self.server
        if len(tracker.connections) >= self.settings.max_connections and not tracker.reclaim():
            self.flow.write(error_response(503, tracker.date_header, retry_after=True))
            self._phase = CLOSED
            self.flow.close()
            return
        client = self.client
        if (
            client is not None
            and self.settings.max_connections_per_client
            and not self._count_client(client[0])
        ):
            self.flow.write(error_response(503, tracker.date_header, retry_after=True))
            self._phase = CLOSED
            self.flow.close()
            return
        tracker.max_pending_output = self.settings.max_pending_output
        tracker.add(self)
        # While draining, a new connection still gets one answer (with Connection: close):
        # its client may already have sent a request, which must not be lost.
        self._enter(IDLE, self.settings.keepalive_timeout)

    def _count_client(self, host: str) -> bool:
        """Count this connection against its client's cap; False if the cap is reached.
        Trusted proxies are not capped: their connections carry many clients."""
        settings = self.settings
        forwarded = settings.forwarded
        if forwarded is not None and forwarded.trusts(host):
            return True
        host = client_group(host, settings.client_ipv6_prefix)  # (an IPv6 client: its /64)
        per_client = self.tracker.per_client
        count = per_client.get(host, 0)
        if count >= settings.max_connections_per_client:
            tracker = self.tracker
            tracker.refused_per_client += 1
            refused = tracker.refused_per_client
            if refused == 1 or refused % 1000 == 0:  # (a flood must not flood the log)
                log.warning(
                    "refused %d connection(s) over limits.max_connections_per_client; "
                    "the latest from %s, which has %d open on this worker",
                    refused,
                    host,
                    count,
                )
            return False
        per_client[host] = count + 1
        self._counted_as = host
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = CLOSED
        flow = self.flow
        flow.lost()
        # freed when the last reference goes, not at the next garbage collection: the
        # parser's callbacks and the flow's are this connection's bound methods
        flow.on_writable = None
        self.drop_parser()
        self.tracker.remove(self)
        host = self._counted_as
        if host is not None:
            self._counted_as = None
            per_client = self.tracker.per_client
            left = per_client.get(host, 1) - 1
            if left > 0:
                per_client[host] = left
            else:
                per_client.pop(host, None)
        for ex in (self._active, self._parsing, *self._pipeline):
            if ex is not None:
                ex.lost()
        self._pipeline.clear()
        session = self._session
        if session is not None:
            self._session = None
            session.connection_lost(exc)
            self._account_session(session)

    def eof_received(self) -> bool | None:
        # The client finished sending. Answer what we have, then close.
        self._eof = True
        phase = self._phase
        if phase == UPGRADED:
            if self._session is not None:
                self._session.eof_received()
            return True  # the session decides when to close
        if phase == LINGERING:
            self._close()
            return None
        active = self._active
        if active is None and not self._pipeline:
            return None  # the transport closes itself
        for ex in (active, *self._pipeline):
            if ex is not None:
                ex.keep_alive = False
                ex.peer_closed()
        parsing = self._parsing
        if parsing is not None:
            # the rest of its body can never come: that request's client has gone
            self._parsing = None
            parsing.lost()
        return True  # keep the write side open for the responses in progress

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase not in PARSING:
            if phase == UPGRADED and self._session is not None:
                self._session.data_received(data)
            return  # refusing or lingering: discard
        if self._upgrade_rest is not None:
            self._upgrade_rest += data  # for the session, if the handler switches
            return
        if phase == IDLE:
            self._enter(HEAD, self.settings.header_timeout)
        self.parse(data)
        # Handlers run from the loop's ready queue, not inside this read callback: all
        # connections that became readable are read first, then answered. Answering
        # inside the callback measured about a third slower on loopback (wrk, c64).
        if (
            self._active is None
            and self._pipeline
            and not self._dispatching
            and not self._dispatch_scheduled
        ):
            self._schedule_dispatch()

    def switch_asked(self, rest: bytes) -> None:
        ex = self._last
        if ex is None or self._phase not in PARSING:
            return
        # Until its handler decides, whatever follows may be the new protocol's: hold it.
        # Served as plain HTTP instead, the connection closes after the response. An
        # HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8: it may have come through
        # a 1.0 proxy that did not drop it): served as plain HTTP, then closed.
        ex.can_upgrade = ex.head.http_version == "1.1"
        ex.keep_alive = False
        self._upgrade_rest = rest
        self.flow.pause_reading(HANDOVER)

    def _schedule_dispatch(self) -> None:
        """Answer this connection's next request on the loop's next turn. The worker's
        connections that get a request in one turn are answered in one callback, not
        one callback (an event-loop handle) each."""
        self._dispatch_scheduled = True
        tracker = self.tracker
        tracker.ready.append(self)
        if not tracker.ready_scheduled:
            tracker.ready_scheduled = True
            self.loop.call_soon(_dispatch_ready, tracker)

    def _dispatch_soon(self) -> None:
        self._dispatch_scheduled = False
        if (
            self._active is None
            and self._pipeline
            and not self._dispatching
            and self._phase != CLOSED
        ):
            self._dispatch()

    # -- parser callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == IDLE:
            self._enter(HEAD, self.settings.header_timeout)

    def head_parsed(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        body_expected: bool,
        expect_continue: bool,
    ) -> None:
        self._requests += 1
        if keep_alive and (
            self.tracker.draining or self._requests == self.settings.max_keepalive_requests
        ):
            keep_alive = False
        head = RequestHead(
            method,
            raw_path,
            query,
            version,
            headers,
            self.client,
            self.server,
            self.scheme,
            tls=self.tls,
        )
        if self.settings.forwarded is not None:
            head = self.settings.forwarded.resolve(head)  # behind trusted proxies
        ex = H1Exchange(self, head, keep_alive, body_expected, expect_continue)
        self._last = ex
        self._pipeline.append(ex)
        if body_expected:
            self._parsing = ex
            self._body_deadline = self.tracker.now + self.settings.body_timeout
            self._rate_since = 0.0  # the window opens at the next tick that finds it read
        if self._phase == IDLE or self._phase == HEAD:
            self._phase = BUSY
        if self._active is not None or len(self._pipeline) > 1:
            self.flow.pause_reading(PIPELINE)  # bound what a pipelining client can queue

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        ex.received += len(body)
        if ex.received > self.settings.max_body_size:
            raise self._remember(Reject(413, "request body too large"))
        self._body_deadline = self.tracker.now + self.settings.body_timeout
        ex.feed(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        trailers = self._trailers
        if trailers is not None:
            self._trailers = None
        if ex is not None and not self.body_of_switch:
            self._parsing = None
            if trailers is not None:
                ex.request_trailers = trailers
            ex.complete()

    def body_received(self) -> int:
        ex = self._parsing
        return -1 if ex is None else ex.received

    # -- dispatching -------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._dispatching = True
        flow = self.flow
        turn = 0
        try:
            while self._active is None and self._pipeline and self._phase != CLOSED:
                if turn == PIPELINE_TURN:
                    # a client pipelining many small requests answered at once yields
                    # to the other connections now and then
                    if not self._dispatch_scheduled:
                        self._schedule_dispatch()
                    break
                turn += 1
                if flow.write_paused:
                    self._next_request()  # hold the pipeline until the client reads
                    break
                ex = self._pipeline.pop(0)
                self._active = ex
                if not ex.body_complete:
                    # read its body only as its handler asks for it
                    flow.pause_reading(BODY)
                if not self._pipeline:
                    flow.resume_reading(PIPELINE)
                stages = ex.stages
                if stages is not None:
                    stages[STAGE_DISPATCH] = time.perf_counter()
                try:
                    self._handler(ex)
                except BaseException as exc:  # the handler must not raise; contain it
                    ex.fail(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._dispatching = False
        if self._active is None and not self._pipeline and self._refusal:
            self._send_error()

    def _account(self, ex: H1Exchange) -> None:
        """Count a finished exchange and write its access-log line."""
        tracker = self.tracker
        tracker.request_done()
        access_log = self.settings.access_log
        if access_log is None and not tracker.counting:
            return
        duration = _clock() - ex.start_time
        if tracker.counting:
            head = ex.head
            tracker.count(
                head.method, head.route, ex.status, ex.response_body_sent, ex.received, duration
            )
        if access_log is not None:
            try:
                access_log(ex, ex.status, ex.response_body_sent, duration)
            except Exception:
                log.exception("access log failed")

    def _account_session(self, session: Session) -> None:
        """The session that took the connection over has ended: log it (status 101, its
        duration and bytes)."""
        ex = self._last
        self._last = None
        self.tracker.sessions_ended += 1
        access_log = self.settings.access_log
        if ex is not None and access_log is not None:
            try:
                access_log.session(ex, session, time.perf_counter() - ex.start_time)
            except Exception:
                log.exception("access log failed")

    def exchange_done(self, ex: H1Exchange) -> None:
        """The exchange's response has been completely handed over (or it failed)."""
        if ex is not self._active:
            return
        self._active = None
        if self._last is ex:
            self._last = None  # an idle connection keeps no request alive
        self._account(ex)
        if self._phase == CLOSED:
            return
        if not ex.body_complete:
            self._linger()  # the app answered without reading the whole request body
            return
        if ex.must_close:
            self._close()
            return
        self._next_request()

    def _next_request(self) -> None:
        """Go on after a response: the next pipelined request, a pending error, or wait."""
        flow = self.flow
        if flow.write_paused:
            # The client is not reading our responses: answer nothing more (and read
            # nothing more) until it does, or its responses would pile up in memory.
            flow.pause_reading(RESPONSES)
            return
        if self._pipeline:
            if not self._dispatching:
                self._dispatch()
            return
        if self._refusal:
            self._send_error()
            return
        if self._parsing is None:
            if not self._in_head:
                self._enter(IDLE, self.settings.keepalive_timeout)
            elif self._phase != HEAD:
                # the next head began while this response was in progress: its time
                # starts now
                self._enter(HEAD, self.settings.header_timeout)
        flow.resume_reading(_READ_ALL)

    def _writable(self) -> None:
        """The client reads again: answer what was held back for it."""
        phase = self._phase
        if self._active is None and (phase in PARSING or phase == REFUSING):
            self._next_request()

    # -- upgrade -------------------------------------------------------------------------
    def switch(self, ex: H1Exchange, session: Session) -> None:
        """``ex`` answered 101: the connection's bytes belong to ``session`` from now."""
        if ex is not self._active or self._pipeline:
            raise RuntimeError("only the last request of a connection can switch protocols")
        self._active = None
        if self._phase == CLOSED:
            self._account(ex)
            self.loop.call_soon(session.connection_lost, None)
            return
        self.tracker.request_done()
        self._last = ex  # its access-log line is written when the session ends
        self.shed_parser()  # no more HTTP on this connection (about 1 KB)
        self._phase = UPGRADED
        self._session = session
        rest = self._upgrade_rest or b""
        self._upgrade_rest = None
        flow = self.flow
        flow.reset_reading()
        if rest:
            self.loop.call_soon(self._deliver, rest)
        if self._eof:
            self.loop.call_soon(self._deliver_eof)

    def _deliver(self, data: bytes) -> None:
        if self._session is not None:
            self._session.data_received(data)

    def _deliver_eof(self) -> None:
        if self._session is not None:
            self._session.eof_received()

    # -- errors --------------------------------------------------------------------------
    def refuse(self, status: int, reason: str) -> None:
        """Refuse the request being parsed; answer once earlier responses are done."""
        if self._phase not in PARSING:
            return  # already refusing, lingering or closed
        log.debug("rejecting request from %s: %d %s", self.client, status, reason)
        self._refusal = status
        self._phase = REFUSING
        ex = self._parsing
        if ex is not None:
            # a request already handed to the handler (e.g. its body broke off)
            self._parsing = None
            ex.keep_alive = False
            if ex in self._pipeline:
                self._pipeline.remove(ex)
            elif ex is self._active:
                if not ex.response_started:
                    ex.abandon()
                    self._active = None
                else:
                    ex.lost()
                    self._close()
                    return
        self.flow.stop_reading()
        if self._active is None and not self._pipeline:
            self._send_error()

    def _send_error(self) -> None:
        status = self._refusal
        self._refusal = 0
        if self._phase == CLOSED:
            return
        self.flow.write(error_response(status, self.tracker.date_header))
        self._linger()

    def _linger(self) -> None:
        """Half-close and drain what the client is still sending, then close.

        Closing with unread input makes the kernel answer with a reset, which can destroy
        the response the client has not read yet (nginx's lingering close avoids it too).
        """
        if self._phase == CLOSED:
            return
        self._phase = LINGERING  # whatever arrives from now on is discarded
        if self._eof:
            self._close()  # the client has stopped sending already: nothing to drain
            return
        transport = self.flow.transport
        try:
            can_eof = transport.can_write_eof()
        except (AttributeError, NotImplementedError):
            can_eof = False
        if not can_eof:
            self._close()
            return
        transport.write_eof()
        self._enter(LINGERING, LINGER_SECONDS)
        self.flow.reset_reading()

    # -- deadlines -----------------------------------------------------------------------
    def check_deadline(self, now: float) -> None:
        flow = self.flow
        if flow.write_deadline and flow.write_timed_out(now):
            self._phase = CLOSED
            flow.abort()
            return
        phase = self._phase
        if phase == CLOSED:
            return
        if phase == UPGRADED:
            # a WebSocket session or a proxied tunnel: what waits for a slow client
            # counts against limits.max_pending_output like a response does
            if flow.slow_since:
                self.tracker.waiting_to_send(self, flow.slow_since, flow.buffered())
            return
        ex = self._parsing
        if ex is not None and self._body_too_slow(ex, now):
            if ex is not self._active or not ex.response_started:
                self.refuse(408, "request body too slow")
            else:
                self.abort()
            return
        if ex is not None and now >= self._body_deadline:
            if flow.paused_for:
                # we are not reading (its turn has not come, or its handler has not
                # asked for it yet): the client cannot be late
                self._body_deadline = now + self.settings.body_timeout
            elif ex is not self._active or not ex.response_started:
                self.refuse(408, "request body timed out")
                return
            else:
                self.abort()
                return
        if flow.slow_since:
            self.tracker.waiting_to_send(self, flow.slow_since, flow.buffered())
        if now < self._read_deadline:
            if phase == IDLE and self._requests:
                self.shed_parser()  # idle between requests: keep as little as possible
            return
        if phase in (IDLE, LINGERING):
            self._close()
        elif phase == HEAD:
            self._refusal = 408
            self._phase = REFUSING
            self._send_error()

    def _body_too_slow(self, ex: H1Exchange, now: float) -> bool:
        """Whether the body arriving has come slower than ``min_body_rate`` on average
        since bastion began reading it, once the grace period is over. Time when bastion
        was not reading (the handler has not asked for it) does not count."""
        flow = self.flow
        if flow.paused_for or flow.stopped:
            self._rate_since = 0.0
            return False
        since = self._rate_since
        if since == 0.0:
            self._rate_since = now
            self._rate_base = ex.received
            return False
        settings = self.settings
        late = now - since - settings.rate_grace
        return late > 0.0 and ex.received - self._rate_base < settings.min_body_rate * late

    # -- eviction ------------------------------------------------------------------------
    def waiting(self, now: float) -> float:
        phase = self._phase
        if phase == IDLE:
            if self._active is not None or self._pipeline:
                return -1.0
            waited = now - self._since
            # Between two requests, the next may be arriving: it does not go before it has
            # been idle a while. Just accepted, its first request would have come by now.
            least = EVICT_MIN_WAIT if self._requests else EVICT_FRESH_WAIT
            return waited if waited >= least else -1.0
        if phase == HEAD:
            waited = now - self._since
        elif phase == LINGERING:
            return now - self._since + 3600.0  # closing anyway: first to go
        elif phase in (BUSY, REFUSING):
            # Time spent on a transfer, less a credit for what went through it: a client
            # that moves data fast (a large download or upload) is not the one to go.
            flow = self.flow
            slow_since = flow.slow_since
            ex = self._parsing
            if slow_since:  # the client does not read its response fast enough
                waited = now - slow_since - flow.progress() / EVICT_CREDIT_RATE
            elif ex is not None and self._rate_since:  # the client sends its body
                moved = ex.received - self._rate_base
                waited = now - self._rate_since - moved / EVICT_CREDIT_RATE
            else:
                return -1.0  # bastion (the app) is working: not the client's fault
        else:
            return -1.0
        return waited if waited >= EVICT_MIN_WAIT else -1.0

    def evict(self) -> None:
        if self._phase == IDLE:
            self._close()
        else:
            self.abort()

    # -- closing -------------------------------------------------------------------------
    def shutdown(self) -> None:
        phase = self._phase
        if phase == CLOSED:
            return
        if phase == UPGRADED:
            if self._session is not None:
                self._session.shutdown()
            return
        if self._active is None and not self._pipeline and not self._in_head:
            if phase == IDLE:
                # Nothing in progress, but the client may have sent its next request
                # already (just accepted, or a keep-alive client that got its last
                # answer a moment ago): closing now would lose it. Give it a short
                # while; an answer given meanwhile carries Connection: close, and a
                # connection still silent then is closed.
                self._enter(IDLE, min(self.settings.keepalive_timeout, DRAIN_IDLE_GRACE))
                return
            self._close()
            return
        for ex in (self._active, *self._pipeline):
            if ex is not None:
                ex.keep_alive = False

    def _close(self) -> None:
        if self._phase != CLOSED:
            self._phase = CLOSED
            self.flow.close()

    def abort(self) -> None:
        self._phase = CLOSED
        self.flow.abort()

    # -- transport flow control ----------------------------------------------------------
    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()


def _dispatch_ready(tracker: ConnectionTracker) -> None:
    """The loop's turn to answer: every connection that got a request since the last
    one, in the order they got it (those that become ready meanwhile wait for the next
    turn, as a pipelining client yielding to the others does)."""
    tracker.ready_scheduled = False
    ready = tracker.ready
    if not ready:
        return
    tracker.ready = []
    done = 0
    try:
        for conn in ready:
            done += 1
            cast(HTTP1Protocol, conn)._dispatch_soon()
    finally:
        if done < len(ready):  # a handler let KeyboardInterrupt or SystemExit through
            for conn in ready[done:]:
                cast(HTTP1Protocol, conn)._schedule_dispatch()
