"""TLS handshakes under bastion's own control: a cap on those in progress per worker.

A TLS listener accepts plain TCP connections; :class:`TLSAcceptor` is a connection's
first protocol. It stops reading at once and asks the worker's :class:`HandshakeGate`
for a slot. With one free, the gate puts bastion's TLS layer
(:class:`~bastion.protocol.tls_transport.TLSTransport`) on the connection, which
handshakes within ``tls.handshake_timeout``; once the handshake is done, the HTTP/1
connection is made on top of it.

Over ``tls.max_handshakes``, a connection waits, not read (it costs a socket and a
small record), first come first served, for at most ``tls.handshake_wait`` seconds;
then it is closed without a byte sent. A slot comes back when a handshake ends, fails or
times out, and, while connections wait, when a handshake that has gone on for
:data:`EVICT_AFTER` is cut for them (a real one takes a few round trips; one that old is
nearly always a client that started and stalled). A flood of clients that make
expensive full handshakes thus gets at most that many in progress per worker, and a
flood of clients that stall cannot keep newcomers out.

On a listener that expects a PROXY header, :class:`~bastion.protocol.proxy.ProxyHeaderReader`
reads it first and hands the connection, with the bytes that followed the header, to
the gate (:func:`tls_after_proxy`): the HTTP connection sees the header's addresses.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from bastion.observe.logging import logger
from bastion.protocol.tls_transport import TLSTransport

if TYPE_CHECKING:
    from bastion.protocol.http1 import HTTP1Protocol
    from bastion.protocol.proxy import Handoff, ProxyHeader

__all__ = [
    "DEFAULT_HANDSHAKE_WAIT",
    "DEFAULT_MAX_HANDSHAKES",
    "EVICT_AFTER",
    "GATES",
    "HandshakeGate",
    "TLSAcceptor",
    "tls_after_proxy",
    "tls_factory",
]

#: per worker; see docs/tls.md for why
DEFAULT_MAX_HANDSHAKES: Final = 256
DEFAULT_HANDSHAKE_WAIT: Final = 2.0
#: at the cap, a handshake in progress this long (seconds) gives its slot to a newcomer:
#: a real one takes a few round trips, well under a second
EVICT_AFTER: Final = 1.0

MakeHTTP = Callable[[], "HTTP1Protocol"]

#: the worker's gates, read (never written) once a second by the metrics recorder
GATES: weakref.WeakSet[HandshakeGate] = weakref.WeakSet()


class HandshakeGate:
    """A worker's TLS handshakes: at most ``limit`` in progress (0: no cap), the rest
    waiting up to ``wait`` seconds for a slot (0: closed at once)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        timeout: float,
        limit: int = DEFAULT_MAX_HANDSHAKES,
        wait: float = DEFAULT_HANDSHAKE_WAIT,
    ) -> None:
        self.context = context
        self.timeout = timeout
        self.limit = limit
        self.wait = wait
        #: handshakes in progress
        self.active = 0
        #: connections refused because no slot came free in time (since start)
        self.refused = 0
        self._waiting: collections.deque[TLSAcceptor] = collections.deque()
        # the TLS layers of the handshakes in progress, with their TCP transport
        self._sessions: dict[TLSTransport, asyncio.Transport] = {}
        # the transports of the handshakes in progress, oldest first, with their start
        self._running: dict[asyncio.Transport, float] = {}
        self._evicting: set[asyncio.Transport] = set()  # cut, their slot not yet back
        self._sweep: asyncio.TimerHandle | None = None
        #: handshakes cut at the cap to make room for a newcomer (since start)
        self.evicted = 0
        #: handshakes that failed, timed out or lost their client (since start; not
        #: those cut at the cap)
        self.failed = 0
        self._closed = False
        GATES.add(self)

    @property
    def waiting(self) -> int:
        """Connections waiting for a slot."""
        return len(self._waiting)

    def admit(self, conn: TLSAcceptor) -> None:
        """Handshake on ``conn``'s transport now or when a slot frees up."""
        transport = conn.transport
        assert transport is not None
        if self._closed:
            transport.abort()
            return
        if not self.limit or self.active < self.limit:
            self._start(conn)
            return
        loop = asyncio.get_running_loop()
        wait = self.wait
        if len(self._waiting) >= len(self._evicting) and self._evict_oldest(loop.time()):
            wait = max(wait, EVICT_AFTER)  # a slot comes back on the loop's next turn
        elif wait <= 0:
            self._refuse(transport)
            return
        conn.timer = loop.call_later(wait, self._expire, conn)
        self._waiting.append(conn)
        self._schedule_sweep(loop)

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """With connections waiting, cut the oldest handshake when it turns EVICT_AFTER."""
        if self._sweep is not None or not self._running or not self._waiting:
            return
        oldest = next(iter(self._running.values()))
        self._sweep = loop.call_at(oldest + EVICT_AFTER, self._on_sweep, loop)

    def _on_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        want = len(self._waiting) - len(self._evicting)
        now = loop.time()
        while want > 0 and self._evict_oldest(now):
            want -= 1
        self._schedule_sweep(loop)

    def _evict_oldest(self, now: float) -> bool:
        """Cut the oldest handshake in progress if it has gone on for EVICT_AFTER: a
        client that starts a handshake and stalls must not keep a newcomer out."""
        for transport, started in self._running.items():
            if now - started < EVICT_AFTER - 0.01:  # (timers may fire a little early)
                return False
            del self._running[transport]
            self._evicting.add(transport)
            self.evicted += 1
            if self.evicted == 1 or self.evicted % 1000 == 0:
                logger.warning(
                    "%d TLS handshakes in progress (tls.max_handshakes): cut %d that had "
                    "gone on for over %gs to let newer connections in",
                    self.active,
                    self.evicted,
                    EVICT_AFTER,
                )
            transport.abort()  # its task ends, releasing the slot
            return True
        return False

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            logger.warning(
                "%d TLS handshakes in progress (tls.max_handshakes): closed %d connection(s) "
                "that found no slot within %gs",
                self.active,
                self.refused,
                self.wait,
            )
        transport.abort()

    def _expire(self, conn: TLSAcceptor) -> None:
        conn.timer = None
        try:
            self._waiting.remove(conn)
        except ValueError:
            return
        if conn.transport is not None:
            self._refuse(conn.transport)

    def _start(self, conn: TLSAcceptor) -> None:
        """Start the handshake on ``conn``'s connection: bastion's TLS layer becomes
        its protocol, with the bytes read so far, and makes the HTTP connection on top
        once the handshake is done."""
        self.active += 1
        transport = conn.transport
        if transport is None or transport.is_closing():
            self._release()
            return
        loop = asyncio.get_running_loop()
        rest = bytes(conn.buffer)
        conn.transport = None
        self._running[transport] = loop.time()
        tls = TLSTransport(loop, transport, self.context, conn.make(), self._ended, self.timeout)
        self._sessions[tls] = transport
        transport.set_protocol(cast(asyncio.BaseProtocol, tls))  # (it has the methods)
        if rest:
            tls.data_received(rest)
        transport.resume_reading()  # (the acceptor paused it when the first bytes came)

    def _release(self) -> None:
        self.active -= 1
        while self._waiting and (not self.limit or self.active < self.limit):
            conn = self._waiting.popleft()
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None
            if conn.transport is None or conn.transport.is_closing():
                continue
            self._start(conn)
        if self._waiting:
            self._schedule_sweep(asyncio.get_running_loop())

    def _ended(self, tls: TLSTransport, exc: BaseException | None) -> None:
        """A handshake ended: done (``exc`` None), failed, timed out or cut."""
        transport = self._sessions.pop(tls, None)
        if transport is None:
            return
        self._running.pop(transport, None)
        evicted = transport in self._evicting
        self._evicting.discard(transport)
        if exc is not None and not evicted:
            self.failed += 1
            if not isinstance(exc, (OSError, ssl.SSLError)):
                logger.error("TLS handshake with %s: %r", transport.get_extra_info("peername"), exc)
        self._release()

    def close(self) -> None:
        """The worker stops: close the connections waiting for a slot and those still
        in their handshake (finished connections belong to the connection tracker)."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._waiting:
            conn = self._waiting.popleft()
            if conn.timer is not None:
                conn.timer.cancel()
            if conn.transport is not None:
                conn.transport.abort()
        for tls in list(self._sessions):
            tls.abort()


class TLSAcceptor(asyncio.Protocol):
    """A connection to a TLS listener until its handshake starts: it asks the gate for a
    slot and keeps the bytes that come meanwhile (reading paused after the first), which
    the TLS protocol then gets first."""

    __slots__ = ("_gate", "buffer", "make", "timer", "transport")

    def __init__(self, gate: HandshakeGate, make: MakeHTTP, rest: bytes = b"") -> None:
        self._gate = gate
        self.make = make
        self.buffer = bytearray(rest)
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop starts reading after this returns: pausing here would do nothing)
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._gate.admit(self)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.buffer += data
        self.transport.pause_reading()  # the TLS protocol resumes it

    def eof_received(self) -> bool | None:
        return None  # closes the transport: no client, no handshake

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def tls_after_proxy(gate: HandshakeGate, make: MakeHTTP) -> Handoff:
    """The hand-off of a PROXY header reader on a TLS listener: TLS, then a new HTTP/1
    connection that sees the header's addresses as its own."""

    def handoff(transport: asyncio.Transport, rest: bytes, header: ProxyHeader) -> None:
        def make_proxied() -> HTTP1Protocol:
            proto = make()
            if not header.local:
                # before connection_made, so that per-client limits count the real client
                proto.client = header.client
                proto.server = header.server
            return proto

        conn = TLSAcceptor(gate, make_proxied, rest)
        transport.set_protocol(conn)
        conn.connection_made(transport)

    return handoff


def tls_factory(
    gate: HandshakeGate, make: MakeHTTP, expect_proxy: bool
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory of a TLS listener: TLS then ``make()``; on a listener that
    expects a PROXY header, that header first."""
    if not expect_proxy:
        return lambda: TLSAcceptor(gate, make)
    from bastion.protocol.proxy import ProxyHeaderReader

    then = tls_after_proxy(gate, make)
    return lambda: ProxyHeaderReader(then)
