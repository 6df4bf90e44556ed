"""bastion's TLS record layer: a server TLS connection over a TCP transport.

:class:`TLSTransport` sits between the event loop's TCP transport and the HTTP
connection. To the TCP transport it is the protocol: it takes the encrypted bytes the
socket read and writes the encrypted bytes to send. To the HTTP connection it is the
transport: it hands on the decrypted bytes and encrypts what is written. The TLS itself
is OpenSSL through the standard ``ssl`` module, on memory buffers (``ssl.MemoryBIO``),
exactly as the event loop's own ``start_tls`` does; what this module replaces is only
the bookkeeping around it, which costs a kept-alive connection about 1-2 µs of CPU per
request in uvloop's general-purpose layer (docs/tls.md has the figures). Here a request
that arrives in one record is one ``read`` of the socket, one decryption straight to the
HTTP connection, and its response one encryption and one ``write``.

What a TLS user expects and this layer does:

* the handshake, with a deadline (``tls.handshake_timeout``): the handshake gate
  (:mod:`bastion.protocol.handshake`) is told when it ends, well or not;
* SNI and ALPN (the context's callbacks run during the handshake, as anywhere);
* ``close_notify`` both ways: the client's is the end of its requests
  (``eof_received``); closing sends bastion's before the TCP connection closes;
* a TCP end without ``close_notify`` is an end of the client's requests too (the
  responses in progress still go out, encrypted), as on a plain connection;
* flow control both ways: the HTTP connection pausing its reading stops the socket's
  (and the records already taken wait in the buffer); the TCP buffer passing its
  high-water mark pauses the HTTP connection's writing;
* a record that does not decrypt, or any other TLS error, ends the connection, with
  the alert OpenSSL made for it;
* ``get_extra_info``: ``ssl_object``, ``sslcontext``, ``peercert``, ``cipher`` and
  ``compression`` from the TLS connection, anything else (``peername``, ``socket``...)
  from the TCP transport. (The socket is that of the TCP connection: what goes to it
  directly is not encrypted, so :class:`~bastion.protocol.flow.Flow` never sends to it
  on a connection whose transport has an ``sslcontext``.)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["TLSTransport"]

# states
HANDSHAKE: Final = 0
OPEN: Final = 1
CLOSING: Final = 2  # close() was called: close_notify sent, the TCP connection closing
CLOSED: Final = 3

#: the most decrypted bytes asked of OpenSSL at once (a record holds at most 16 KiB)
READ_MAX: Final = 64 * 1024

HandshakeDone = Callable[["TLSTransport", "BaseException | None"], None]


class TLSTransport:
    """One server TLS connection: the TCP transport's protocol, and the transport of the
    protocol above it (``app``), which it makes (``connection_made``) once the handshake
    is done."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tcp: Any,
        context: ssl.SSLContext,
        app: Any,
        on_handshake: HandshakeDone,
        timeout: float,
    ) -> None:
        self._loop = loop
        #: the TCP transport beneath (uvloop's transports are not asyncio subclasses)
        self._tcp: Any = tcp
        self._context = context
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        #: the ``ssl.SSLObject`` (what ``get_extra_info("ssl_object")`` gives)
        self.ssl_object: ssl.SSLObject = context.wrap_bio(
            self._incoming, self._outgoing, server_side=True
        )
        # the C object itself, for the calls made on every record, and those calls
        # bound once (a call through them needs no method lookup)
        self._ssl: Any = getattr(self.ssl_object, "_sslobj", self.ssl_object)
        self._decrypt: Any = self._ssl.read
        self._decrypted: Any = self._ssl.pending
        self._encrypt: Any = self._ssl.write
        self._sealed: Any = self._outgoing.read
        self._send: Any = tcp.write
        self._app: Any = app
        self._on_handshake: HandshakeDone | None = on_handshake
        self._state = HANDSHAKE
        self._made = False  # app.connection_made was called
        self._paused = False  # the app paused reading
        self._resume: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = (
            loop.call_later(timeout, self._timed_out) if timeout > 0 else None
        )

    # -- the TCP transport's protocol ----------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        """(Installed with ``set_protocol`` on a connection already made: not called.)"""

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        state = self._state
        if state == OPEN:
            if not self._paused:
                self._read()
        elif state == HANDSHAKE:
            self._handshake()
        # closing or closed: the client's bytes are of no use any more

    def eof_received(self) -> bool | None:
        """The client ended its side of the TCP connection, without ``close_notify``."""
        state = self._state
        if state == HANDSHAKE:
            self._handshake_failed(ConnectionResetError("the client closed during the handshake"))
            return None
        if state == OPEN and self._made:
            if not self._paused and self._incoming.pending:
                self._read()  # records that came with the end go first
                if self._state != OPEN or not self._made:
                    return None
            keep = self._app.eof_received()
            return True if keep else None
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        self._state = CLOSED
        self._cancel_timers()
        if state == HANDSHAKE:
            self._handshake_failed(exc or ConnectionResetError("the connection was lost"))
        elif self._made:
            self._made = False
            app = self._app
            self._app = None  # (no cycle through the protocol above)
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._made:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._made:
            self._app.resume_writing()

    # -- the handshake ---------------------------------------------------------------------
    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError, OSError, ValueError) as exc:
            self._flush()  # the alert that says why, for the client's error message
            self._handshake_failed(exc)
            return
        self._flush()
        self._state = OPEN
        self._cancel_timers()
        done = self._on_handshake
        self._on_handshake = None
        if done is not None:
            done(self, None)
        if self._state != OPEN:  # (the gate closed meanwhile)
            return
        self._made = True
        self._app.connection_made(self)
        if self._state == OPEN and not self._paused:
            self._read()  # a request that came in the handshake's last flight

    def _handshake_failed(self, exc: BaseException) -> None:
        if self._state == HANDSHAKE:
            self._state = CLOSED
        self._cancel_timers()
        done = self._on_handshake
        self._on_handshake = None
        self._app = None
        if done is not None:
            done(self, exc)
        self._tcp.abort()

    def _timed_out(self) -> None:
        self._timer = None
        if self._state == HANDSHAKE:
            self._handshake_failed(TimeoutError("the TLS handshake took too long"))

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None

    # -- records in --------------------------------------------------------------------------
    def _read(self) -> None:
        """Decrypt what came in and hand it on, while the app reads."""
        incoming = self._incoming
        decrypt = self._decrypt
        try:
            # what is still encrypted, and what OpenSSL decrypted but did not give yet:
            # checking first spares the exception that ends a read loop otherwise (a few
            # µs); a record's text is never longer than the record
            size = incoming.pending + self._decrypted()
            while size > 0:
                asked = size if size < READ_MAX else READ_MAX
                data = decrypt(asked)
                if not data:  # the client's close_notify
                    self._close_notified()
                    break
                self._app.data_received(data)
                if self._paused or self._state != OPEN:
                    break
                size = incoming.pending
                if len(data) == asked:  # (less: OpenSSL gave all it had)
                    size += self._decrypted()
        except ssl.SSLWantReadError:
            pass  # the rest of a record is still on its way
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._fatal(exc)
            return
        self._flush()  # (a key update's answer)

    def _close_notified(self) -> None:
        if not self._made:
            return
        if not self._app.eof_received():
            self.close()

    def _fatal(self, exc: BaseException) -> None:
        self._flush()
        self._state = CLOSED
        self._tcp.abort()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._send(self._sealed())

    # -- the transport of the protocol above ---------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != OPEN or not len(data):
            return
        try:
            self._encrypt(data)
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._fatal(exc)
            return
        self._send(self._sealed())

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        if self._state != OPEN:
            return
        tls = self._ssl
        try:
            for data in list_of_data:
                if len(data):
                    tls.write(data)
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._fatal(exc)
            return
        self._flush()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close: close_notify ends both directions

    def write_eof(self) -> None:
        raise NotImplementedError("a TLS connection cannot end one direction only")

    def close(self) -> None:
        """Send ``close_notify``, then close the TCP connection once its buffer is sent."""
        state = self._state
        if state >= CLOSING:
            return
        if state == HANDSHAKE:
            self.abort()  # (nothing to say yet; the gate gets its slot back)
            return
        self._state = CLOSING
        self._cancel_timers()
        if state == OPEN:
            try:
                self._ssl.shutdown()
            except (ssl.SSLError, OSError, ValueError):
                pass  # (it waits for the client's close_notify, which bastion does not)
            self._flush()
        self._tcp.close()

    def abort(self) -> None:
        state = self._state
        self._state = CLOSED
        self._cancel_timers()
        if state == HANDSHAKE:
            self._handshake_failed(ConnectionAbortedError("the handshake was cut"))
            return
        self._tcp.abort()

    def is_closing(self) -> bool:
        return self._state >= CLOSING or bool(self._tcp.is_closing())

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            if self._resume is not None:
                self._resume.cancel()
                self._resume = None
            self._tcp.pause_reading()

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._state != OPEN:
            return
        self._tcp.resume_reading()
        if self._resume is None and (self._incoming.pending or self._ssl.pending()):
            # records that came before the pause: handed on from the loop, not from
            # inside the call that resumed
            self._resume = self._loop.call_soon(self._read_held)

    def _read_held(self) -> None:
        self._resume = None
        if self._state == OPEN and not self._paused:
            self._read()

    def is_reading(self) -> bool:
        return not self._paused and self._state == OPEN

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        limits: tuple[int, int] = self._tcp.get_write_buffer_limits()
        return limits

    def get_write_buffer_size(self) -> int:
        size: int = self._tcp.get_write_buffer_size()
        return size

    def set_protocol(self, protocol: Any) -> None:
        self._app = protocol

    def get_protocol(self) -> Any:
        return self._app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.ssl_object
        if name == "sslcontext":
            return self._context
        if name == "peercert":
            return self.ssl_object.getpeercert()
        if name == "cipher":
            return self.ssl_object.cipher()
        if name == "compression":
            return self.ssl_object.compression()
        return self._tcp.get_extra_info(name, default)
