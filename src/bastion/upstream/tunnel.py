"""A client connection and an upstream connection joined byte for byte after ``101``.

When a proxied request asks to switch protocols (``Upgrade: websocket``) and the
upstream answers ``101 Switching Protocols``, the proxy hands the client's connection
over to a :class:`Tunnel` (the exchange's ``take_over()``: the tunnel is its
:class:`~bastion.protocol.types.Session`) and points the upstream connection at the same
tunnel. From then on every byte from one side is written to the other, unparsed.

Backpressure both ways: when the upstream does not take what the client sends, the
client's connection stops being read (the flow's ``SESSION`` reason) until the upstream
drains; when the client does not read, the upstream connection stops being read until
the client drains. A side that closes its writing half has the other side's writing
half closed too (where the transport can: not under TLS, where it closes the whole
connection); a side that goes away takes the other with it.

Endings of bastion's own: a tunnel with no byte either way for ``idle_timeout`` seconds
is closed (each side gets a FIN). When the worker stops (:meth:`Tunnel.shutdown`: at
once on SIGTERM, at the end of ``workers.graceful_timeout`` when the worker is retired)
both sides get a FIN after what was already forwarded, never a reset: whatever either
side sends after that is read and dropped, and the connections close once both sides
have closed theirs (or after :data:`END_WAIT`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from bastion.observe.logging import logger
from bastion.protocol.flow import SESSION

if TYPE_CHECKING:
    from bastion.protocol.flow import Flow
    from bastion.tasks import WorkerTasks
    from bastion.upstream.connection import UpstreamConnection

__all__ = ["Tunnel"]

#: how long a tunnel ending at shutdown waits for both sides to close theirs
END_WAIT: Final = 1.0


class Tunnel:
    """Both directions of one upgraded connection (a Session for the client's side)."""

    __slots__ = (
        "client_eof",
        "closed",
        "conn",
        "ending",
        "flow",
        "idle_timeout",
        "last",
        "loop",
        "tasks",
        "timer",
        "upstream_eof",
        "waiting_client",
        "waiting_upstream",
    )

    def __init__(
        self, conn: UpstreamConnection, tasks: WorkerTasks, idle_timeout: float = 0.0
    ) -> None:
        self.conn = conn
        self.tasks = tasks
        self.flow: Flow | None = None
        self.closed = False
        self.client_eof = False
        self.upstream_eof = False
        self.waiting_client = False  # a task waits for the client to drain
        self.waiting_upstream = False  # a task waits for the upstream to drain
        #: seconds without a byte either way before the tunnel closes (0: never)
        self.idle_timeout = idle_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last = 0.0  # when the last byte went through (the loop's clock)
        self.timer: asyncio.TimerHandle | None = None
        self.ending = False  # both sides were sent a FIN: what comes now is dropped

    def start(self, flow: Flow) -> None:
        """The client's connection is ours (``flow`` is what ``take_over()`` returned)."""
        self.flow = flow
        if self.closed:
            flow.close()
            return
        loop = self.loop = flow.loop
        self.last = loop.time()
        if self.idle_timeout > 0:
            self.timer = loop.call_later(self.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self.timer = None
        loop = self.loop
        if self.closed or loop is None:
            return
        left = self.last + self.idle_timeout - loop.time()
        if left > 0:
            self.timer = loop.call_later(left, self._check_idle)
            return
        logger.info("tunnel idle for %gs: closed", self.idle_timeout)
        self.close()

    # -- the client's side (Session) -------------------------------------------------
    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if self.closed or self.ending:
            return
        loop = self.loop
        if loop is not None:
            self.last = loop.time()
        conn.write(data)
        if conn.writing_paused and not self.waiting_upstream:
            flow = self.flow
            if flow is not None:
                flow.pause_reading(SESSION)
            self.waiting_upstream = True
            self.tasks.spawn(self._upstream_drained())

    def eof_received(self) -> None:
        self.client_eof = True
        if self.closed:
            return
        if self.upstream_eof or self.ending:
            self.close()
            return
        transport = self.conn.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        else:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_eof = True
        if not self.closed:
            self.closed = True
            timer = self.timer
            if timer is not None:
                self.timer = None
                timer.cancel()
            self.conn.close()

    def shutdown(self) -> None:
        """The worker stops: a FIN to both sides, after what was already forwarded.

        The bytes are opaque, so there is no protocol-level goodbye to send; a half
        close tells both ends the tunnel is over without cutting what is in flight (a
        reset would make the kernels drop it). The tunnel closes when both sides have
        closed theirs, or after :data:`END_WAIT`."""
        if self.closed or self.ending:
            return
        self.ending = True
        flow = self.flow
        conn = self.conn
        # reading goes on (and drops what comes): unread bytes at close mean a reset
        if flow is not None:
            flow.resume_reading(SESSION)
            transport = flow.transport
            if transport is not None and not flow.closed and transport.can_write_eof():
                if not self.upstream_eof:
                    transport.write_eof()
            else:
                flow.close()
        conn.resume_reading()
        utransport = conn.transport
        if utransport is not None and not conn.closed and utransport.can_write_eof():
            if not self.client_eof:
                utransport.write_eof()
        else:
            conn.close()
        if self.client_eof and self.upstream_eof:
            self.close()
            return
        loop = self.loop
        if loop is not None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = loop.call_later(END_WAIT, self.close)

    # -- the upstream's side -----------------------------------------------------------
    def from_upstream(self, data: bytes) -> None:
        flow = self.flow
        if self.closed or flow is None or self.ending:
            return
        loop = self.loop
        if loop is not None:
            self.last = loop.time()
        flow.write(data)
        if flow.write_paused and not self.waiting_client:
            self.conn.pause_reading()
            self.waiting_client = True
            self.tasks.spawn(self._client_drained())

    def upstream_eof_received(self) -> bool:
        """The upstream will send nothing more; True keeps its connection open."""
        self.upstream_eof = True
        flow = self.flow
        if self.closed or flow is None:
            return False
        if self.client_eof or self.ending:
            self.close()
            return False
        transport = flow.transport
        if transport is not None and not flow.closed and transport.can_write_eof():
            transport.write_eof()
            return True
        self.close()
        return False

    def upstream_lost(self) -> None:
        self.upstream_eof = True
        if not self.closed:
            self.closed = True
            timer = self.timer
            if timer is not None:
                self.timer = None
                timer.cancel()
            flow = self.flow
            if flow is not None:
                flow.close()  # after what the upstream sent last has gone out

    # -- both --------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        self.conn.close()
        flow = self.flow
        if flow is not None:
            flow.close()

    async def _upstream_drained(self) -> None:
        try:
            await self.conn.drain()
        except Exception:
            self.close()
            return
        finally:
            self.waiting_upstream = False
        flow = self.flow
        if flow is not None and not self.closed:
            flow.resume_reading(SESSION)

    async def _client_drained(self) -> None:
        flow = self.flow
        try:
            if flow is not None:
                await flow.drain()
        except asyncio.CancelledError:
            self.close()
            raise
        finally:
            self.waiting_client = False
        if not self.closed and flow is not None and not flow.closed:
            self.conn.resume_reading()
