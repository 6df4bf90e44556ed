"""Flow control of one connection, shared by everything that reads or writes on it.

A connection owns one :class:`Flow`. The exchanges it creates (and, after an upgrade,
a WebSocket session or a tunnel) are handed the same object and do all their I/O
through it:

* **writes** go to the transport while the connection is open, and are dropped after;
* **reading is paused for reasons**, each a bit of :attr:`Flow.paused_for`: requests
  queued behind the one being answered (:data:`PIPELINE`), a request body its handler
  is not consuming (:data:`BODY`), responses the client is not reading
  (:data:`RESPONSES`), a session that does not take its messages (:data:`SESSION`).
  The transport reads again only when no reason is left, so no party can resume what
  another one paused;
* **writing** is paused while the transport's buffer is above its high-water mark;
  :meth:`Flow.drain` waits until it is below the low-water mark, and
  :meth:`Flow.wait_writable` waits until a file descriptor takes more data (zero-copy
  sends on a duplicate of the socket);
* **the write deadline and rate**: while writing is paused, the client must read
  something within ``write_timeout``, and once ``grace`` seconds have passed it must
  have read at least ``min_rate`` bytes a second on average since the pause began, or
  the connection is dropped (:meth:`Flow.write_timed_out`, called by the worker's
  periodic tick). A client reading one byte at a time cannot hold a response, and the
  memory it pins, for ever.

Nothing here parses or knows HTTP.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import sys
import termios
from collections.abc import Callable
from typing import Any, Final

from bastion.protocol.settings import WRITE_HIGH_WATER, WRITE_LOW_WATER
from bastion.protocol.state import ConnectionTracker

__all__ = ["BODY", "HANDOVER", "PIPELINE", "RESPONSES", "SESSION", "Flow"]

# reasons to pause reading (bits of Flow.paused_for)
PIPELINE: Final = 1  # requests are queued behind the one being answered
BODY: Final = 2  # the handler does not (yet) consume the request body
RESPONSES: Final = 4  # the client does not read its responses
SESSION: Final = 8  # an upgraded session does not take its messages
HANDOVER: Final = 16  # a request asked to switch protocols: wait for its handler to decide


# ioctl: bytes in a socket's send queue not yet acknowledged by the peer (Linux SIOCOUTQ)
_OUTQ: Final = getattr(termios, "TIOCOUTQ", 0x5411)
_INT0: Final = bytes(4)
# SO_LINGER on with a zero timeout: closing sends a reset and drops the send queue
_RESET: Final = struct.pack("ii", 1, 0)


def _not_attached(data: bytes) -> None:
    raise RuntimeError("the flow has no transport yet")


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Flow:
    """Writes, read pausing, write pausing and the write deadline of one connection."""

    __slots__ = (
        "_drain_waiters",
        "_fd",
        "_rate_base",
        "_send",
        "_unsent",
        "closed",
        "encrypted",
        "grace",
        "loop",
        "min_rate",
        "on_writable",
        "paused_for",
        "slow_since",
        "stopped",
        "tracker",
        "transport",
        "write_deadline",
        "write_paused",
        "write_timeout",
        "written",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tracker: ConnectionTracker,
        write_timeout: float,
        min_rate: float = 0.0,
        grace: float = 5.0,
    ) -> None:
        self.loop = loop
        #: the worker's connections; its ``now`` is the clock of every deadline
        self.tracker = tracker
        self.transport: Any = None  # asyncio.Transport (uvloop's is not a subclass)
        self._send: Callable[[bytes], object] = _not_attached
        #: the connection is closed or closing: writes are dropped
        self.closed = False
        #: bits: why reading is paused (0: reading)
        self.paused_for = 0
        #: reading stays off whatever the reasons (an error answer, a lingering close)
        self.stopped = False
        #: the transport's buffer is above its high-water mark
        self.write_paused = False
        self.write_timeout = max(write_timeout, 1.0)
        #: when writing must have made progress (0: no deadline)
        self.write_deadline = 0.0
        #: called when writing resumes (the connection answers held-back requests)
        self.on_writable: Callable[[], None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._unsent = 0  # buffer size when the write deadline was last (re)started
        #: bytes handed to the transport or sent to the socket directly, in all
        self.written = 0
        self.min_rate = min_rate
        self.grace = grace
        #: when bastion began to wait on the client to read (0: it is not waiting)
        self.slow_since = 0.0
        self._rate_base = 0  # bytes the client had taken when the wait began
        self._fd = -1  # the socket, to ask the kernel what it has not delivered yet
        #: the transport encrypts (TLS): bytes must go through it, never to the socket
        self.encrypted = False

    def _wait(self, fut: asyncio.Future[None]) -> None:
        waiters = self._drain_waiters
        if waiters is None:
            self._drain_waiters = [fut]
        else:
            waiters.append(fut)

    def attach(self, transport: Any) -> None:
        self.transport = transport
        # the transport's write, bound once: a call through it needs no method lookup
        self._send = transport.write
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        self.encrypted = transport.get_extra_info("sslcontext") is not None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                self._fd = sock.fileno()
            except (OSError, AttributeError, ValueError):
                self._fd = -1

    # -- writing ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send ``data`` (dropped once the connection is closed)."""
        if not self.closed:
            self.written += len(data)
            self._send(data)

    def sent_directly(self, count: int) -> None:
        """``count`` bytes went to the socket without the transport (``sendfile``)."""
        self.written += count

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark."""
        self.write_paused = True
        if not self.closed:
            self.start_write_deadline(self.tracker.now)

    def resume_writing(self) -> None:
        """The transport's buffer fell below its low-water mark."""
        self.write_paused = False
        self.write_deadline = 0.0
        self.slow_since = 0.0
        self._wake_all()
        if self.on_writable is not None and not self.closed:
            self.on_writable()

    async def drain(self) -> None:
        """Wait while writing is paused (returns at once when the connection is gone)."""
        if not self.write_paused or self.closed:
            return
        fut = self.loop.create_future()
        self._wait(fut)
        await fut

    async def wait_empty(self) -> None:
        """Wait until everything written so far has been taken by the kernel."""
        transport = self.transport
        if transport is None or transport.get_write_buffer_size() == 0:
            return
        transport.set_write_buffer_limits(high=0, low=0)
        try:
            while not self.closed and transport.get_write_buffer_size() > 0:
                self.write_paused = True
                await self.drain()
        finally:
            if not self.closed:
                transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    async def wait_writable(self, fd: int) -> None:
        """Wait until ``fd`` (a duplicate of the socket) takes more data, or the
        connection ends.

        The wait counts as paused writing, so the write deadline applies: a client that
        stops reading is dropped, and dropping it (:meth:`lost`) ends the wait, which
        nothing else would, since ``fd`` keeps the socket open.
        """
        loop = self.loop
        ready: asyncio.Future[None] = loop.create_future()
        self.write_paused = True
        self.start_write_deadline(self.tracker.now)
        self._wait(ready)
        loop.add_writer(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_writer(fd)
            if not self.closed:
                self.write_paused = False
                self.write_deadline = 0.0  # the rate window goes on until writing_freely()

    def cork(self, on: bool) -> bool:
        """Set or clear TCP_CORK (the head and a file leave in full packets, as nginx's
        ``tcp_nopush`` does); False where it cannot be set."""
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        option = getattr(socket, "TCP_CORK", None)
        if sock is None or option is None or self.closed:
            return False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, 1 if on else 0)
        except (OSError, AttributeError, ValueError):
            return False
        return True

    def socket(self) -> socket.socket | None:
        """The connection's socket, to send on directly, where there is one: not under
        TLS, whose transport still shows the TCP socket beneath it (what went to that
        socket would reach the client unencrypted, in the middle of the TLS stream)."""
        transport = self.transport
        if transport is None or self.closed or self.encrypted:
            return None
        sock = transport.get_extra_info("socket")
        return sock if sock is not None else None

    def writing_freely(self) -> None:
        """A zero-copy send ended: bastion no longer waits on the client to read."""
        if not self.write_paused:
            self.slow_since = 0.0

    # -- the write deadline ------------------------------------------------------------
    def start_write_deadline(self, now: float) -> None:
        unsent = self.buffered()
        self._unsent = unsent
        self.write_deadline = now + self.write_timeout
        if self.slow_since == 0.0:
            self.slow_since = now
            self._rate_base = self.delivered()

    def delivered(self) -> int:
        """Bytes the client has received: written, less what the transport and the
        kernel still hold (the kernel's send buffer can take megabytes that the client
        has not read, which must not count as the client's progress)."""
        out = self.written - self.buffered()
        fd = self._fd
        if fd >= 0:
            try:
                out -= int.from_bytes(fcntl.ioctl(fd, _OUTQ, _INT0), sys.byteorder)
            except OSError:
                self._fd = -1  # not a TCP socket (a pipe in tests): count what it took
        return out

    def progress(self) -> int:
        """Bytes the client has received since bastion began to wait on it (0 when it
        does not wait)."""
        if self.slow_since == 0.0:
            return 0
        return self.delivered() - self._rate_base

    def too_slow(self, now: float) -> bool:
        """Whether the client, which bastion has been waiting on since
        :attr:`slow_since`, has read less than ``min_rate`` bytes a second on average
        once the grace period is over."""
        since = self.slow_since
        rate = self.min_rate
        if since == 0.0 or rate <= 0.0:
            return False
        late = now - since - self.grace
        if late <= 0.0:
            return False
        return self.delivered() - self._rate_base < rate * late

    def write_timed_out(self, now: float) -> bool:
        """Whether the client has stopped reading for good (``now`` past the deadline
        with no progress; any progress gives it another ``write_timeout``) or reads too
        slowly (:meth:`too_slow`)."""
        deadline = self.write_deadline
        if deadline == 0.0:
            return False
        if self.too_slow(now):
            self.write_deadline = 0.0
            return True
        if now < deadline:
            return False
        unsent = self.buffered()
        if 0 < unsent < self._unsent:
            self._unsent = unsent
            self.write_deadline = now + self.write_timeout
            return False
        self.write_deadline = 0.0
        return True

    # -- reading -------------------------------------------------------------------------
    def pause_reading(self, reason: int) -> None:
        was = self.paused_for
        self.paused_for = was | reason
        if not was and not self.stopped and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self, reason: int) -> None:
        was = self.paused_for
        if not was & reason:
            return
        now = was & ~reason
        self.paused_for = now
        if not now and not self.stopped and not self.closed:
            self.transport.resume_reading()

    def stop_reading(self) -> None:
        """Read nothing more, whatever the reasons (an error answer is on its way)."""
        if not self.stopped:
            self.stopped = True
            if not self.paused_for and not self.closed:
                self.transport.pause_reading()

    def reset_reading(self) -> None:
        """Forget every reason and read again (to discard what the client still sends
        before a close, or to start a session afresh)."""
        was_off = self.paused_for or self.stopped
        self.paused_for = 0
        self.stopped = False
        if was_off and not self.closed:
            self.transport.resume_reading()

    # -- closing -------------------------------------------------------------------------
    def close(self) -> None:
        """Close once what was written has been sent (sessions use this to end)."""
        transport = self.transport
        if not self.closed and transport is not None:
            self.closed = True
            transport.close()
            if transport.get_write_buffer_size():
                # a client that stops reading must not keep the connection for ever
                self.start_write_deadline(self.tracker.now)

    def abort(self) -> None:
        """Drop the connection now, with whatever is still unsent: a reset, so that the
        kernel also discards what it holds for the client (megabytes for a slow reader,
        which a plain close would go on sending)."""
        transport = self.transport
        if transport is not None and self._fd >= 0:  # also when closing: it may be sending
            self._fd = -1
            sock = transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                except (OSError, AttributeError, ValueError):
                    pass
        self.closed = True
        if transport is not None:
            transport.abort()  # also after close(), which would wait for the client

    # -- the end -------------------------------------------------------------------------
    def lost(self) -> None:
        """The connection is gone: nothing more is written, every waiter wakes."""
        self.closed = True
        self._fd = -1  # the socket is gone (its number may be reused)
        self.write_deadline = 0.0
        self.slow_since = 0.0
        self._wake_all()

    def wake_waiters(self) -> None:
        """Wake whoever waits to write (a session that ended: its writer must not wait
        on a peer that may never read again)."""
        self._wake_all()

    def _wake_all(self) -> None:
        waiters = self._drain_waiters
        if waiters:
            self._drain_waiters = None
            for fut in waiters:
                _wake(fut)
