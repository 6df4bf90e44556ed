"""The access log: one line per response, written off the event loop.

:func:`make_access_log` returns the hook the HTTP protocol calls after each response, or
``None`` when the access log is off so the protocol does no work at all. The hook only
formats a line and puts it on a queue; a writer thread batches the lines to the file, so
a slow disk or a full stdout pipe never stalls request handling.

Formats:

* ``combined`` -- the NCSA combined format that nginx and Apache write by default::

      127.0.0.1 - - [24/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "curl/8" "5f0c9a3e1b2"

  with the request id (as below) as a last quoted field, like nginx's ``$request_id``
  added at the end of its ``combined`` format: parsers of the combined format read the
  nine standard fields and ignore what follows.

* ``json`` -- one JSON object per line with the fields ``time``, ``request_id`` (the
  client's ``X-Request-ID``, else one made here: the one a proxied request takes
  upstream), ``client``, ``method``, ``path``, ``query``, ``http_version``, ``status``,
  ``bytes``, ``duration_ms`` (from the request head to the response's last byte, to the
  microsecond), ``route`` (the route's path, null without routes), ``upstream`` (the
  server that answered a proxied request), ``tls`` (the TLS version, null on plain
  HTTP), ``user`` (set by authentication), ``referer``, ``user_agent`` and ``pid``.

A connection switched to another protocol (a WebSocket) is logged once, when its session
ends, rather than at the ``101``: status 101, ``bytes`` what was sent to the client after
the ``101``, and a duration from the request to the end of the session (what nginx logs
for a proxied WebSocket). The JSON line adds ``upgrade`` (the protocol), ``bytes_in``
(what the client sent after the ``101``) and ``close_code`` (the WebSocket close code:
1000 normal, 1001 going away, 1006 vanished, ...).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import BinaryIO

import msgspec

from bastion.config.schema import LogConfig
from bastion.observe.requestid import request_id
from bastion.protocol.types import Exchange

AccessLogHook = Callable[[Exchange, int, int, float], None]

_STOP = b""  # queued to tell the writer thread to finish
_BATCH = 256  # lines written with one call at most
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _escape(value: bytes) -> str:
    """Header bytes as printable text for a quoted log field (nginx-style \\xHH escapes)."""
    text = value.decode("latin-1")
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\' or code < 0x20 or code >= 0x7F:
            out.append(f"\\x{code:02X}")
        else:
            out.append(ch)
    return "".join(out)


def _find_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    referer = agent = b""
    for name, value in headers:
        if name == b"referer":
            referer = value
        elif name == b"user-agent":
            agent = value
    return referer, agent


def _upgrade(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"upgrade":
            return value.decode("latin-1").strip().lower()
    return None


class _Writer:
    """A queue and the thread that drains it into one binary stream."""

    def __init__(self, stream: BinaryIO, owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self._reopen = False
        self._queue: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.put = self._queue.put
        self._thread = threading.Thread(target=self._run, name="bastion-access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            line = get()
            batch = [line]
            while len(batch) < _BATCH:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            data = b"".join(batch)
            if self._reopen:
                self._reopen = False
                self._open_again()
            if data:
                try:
                    self._stream.write(data)
                    self._stream.flush()
                except (OSError, ValueError):
                    pass  # nowhere left to report it; dropping log lines beats crashing
            if stop:
                return

    def _open_again(self) -> None:
        name = getattr(self._stream, "name", "")
        if not isinstance(name, str) or not name:
            return
        try:
            stream = open(name, "ab")  # noqa: SIM115
        except OSError:
            return  # keep writing to the old file rather than nowhere
        old, self._stream = self._stream, stream
        try:
            old.close()
        except OSError:
            pass

    def reopen(self) -> None:
        """Write to a new file of the same name from now on (after logrotate renamed
        the old one). The writer thread opens it before it writes its next lines."""
        if self._owned:
            self._reopen = True  # the writer thread does it before its next write

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._owned:
            try:
                self._stream.close()
            except OSError:
                pass


class AccessLog:
    """The hook the protocol calls; ``close()`` writes out what is queued."""

    def __init__(self, fmt: str, writer: _Writer, routes: Sequence[str] = ()) -> None:
        self._writer = writer
        self._routes = tuple(routes)
        self._put = writer.put
        self._pid = os.getpid()
        self._second = -1
        self._stamp = ""
        self._emit = self._combined if fmt == "combined" else self._json

    def __call__(self, exchange: Exchange, status: int, body_bytes: int, duration: float) -> None:
        try:
            self._emit(exchange, status, body_bytes, duration)
        except Exception:  # a log line must never break a response
            pass

    def session(self, exchange: Exchange, session: object, duration: float) -> None:
        """``exchange`` switched protocols and its session (a WebSocket) has ended."""
        try:
            bytes_in = getattr(session, "bytes_in", None)
            bytes_out = getattr(session, "bytes_out", 0)
            extra: dict[str, object] = {
                "upgrade": _upgrade(exchange.head.headers),
                "bytes_in": bytes_in if type(bytes_in) is int else None,
                "close_code": getattr(session, "close_code", None) or None,
            }
            sent = bytes_out if type(bytes_out) is int else 0
            if self._emit == self._combined:
                self._combined(exchange, 101, sent, duration)
            else:
                self._json(exchange, 101, sent, duration, extra)
        except Exception:  # a log line must never break a connection
            pass

    def _now(self, iso: bool) -> str:
        """The local time, formatted once per second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            local = datetime.fromtimestamp(second).astimezone()
            if iso:
                self._stamp = local.isoformat()
            else:  # English month names whatever the locale, like nginx
                month = _MONTHS[local.month - 1]
                self._stamp = local.strftime(f"%d/{month}/%Y:%H:%M:%S %z")
        return self._stamp

    def _combined(self, ex: Exchange, status: int, body_bytes: int, duration: float) -> None:
        client = ex.head.client[0] if ex.head.client else "-"
        target = (
            ex.head.raw_path + b"?" + ex.head.query_string
            if ex.head.query_string
            else ex.head.raw_path
        )
        referer, agent = _find_headers(ex.head.headers)
        line = (
            f"{client} - - [{self._now(False)}] "
            f'"{ex.head.method} {_escape(target)} HTTP/{ex.head.http_version}" '
            f'{status} {body_bytes} "{_escape(referer) if referer else "-"}" '
            f'"{_escape(agent) if agent else "-"}" '
            f'"{_escape(request_id(ex.head).encode("latin-1", "replace"))}"\n'
        )
        self._put(line.encode("utf-8", "replace"))

    def _json(
        self,
        ex: Exchange,
        status: int,
        body_bytes: int,
        duration: float,
        extra: dict[str, object] | None = None,
    ) -> None:
        head = ex.head
        referer, agent = _find_headers(head.headers)
        route = head.route
        tls = head.tls
        record: dict[str, object] = {
            "time": self._now(True),
            "request_id": request_id(head),
            "client": head.client[0] if head.client else None,
            "method": ex.head.method,
            "path": ex.head.path,
            "query": ex.head.query_string.decode("latin-1"),
            "http_version": ex.head.http_version,
            "status": status,
            "bytes": body_bytes,
            "duration_ms": round(duration * 1000.0, 3),
            "route": self._routes[route] if 0 <= route < len(self._routes) else None,
            "upstream": head.upstream or None,
            "tls": tls.version if tls is not None else None,
            "user": head.user,
            "referer": referer.decode("latin-1") if referer else None,
            "user_agent": agent.decode("latin-1") if agent else None,
            "pid": self._pid,
        }
        if extra:
            record.update(extra)
        self._put(_encode(record) + b"\n")

    def reopen(self) -> None:
        """Open ``log.access_file`` again by its name (logrotate)."""
        self._writer.reopen()

    def close(self) -> None:
        self._writer.close()


_encoder = msgspec.json.Encoder()


def _encode(record: dict[str, object]) -> bytes:
    return _encoder.encode(record)


def make_access_log(cfg: LogConfig, routes: Sequence[str] = ()) -> AccessLog | None:
    """Build the access-log hook for this process, or ``None`` when it is off.
    ``routes`` are the labels of the site's routes, by index (the ``route`` field).

    Call it in the process that serves requests (a worker, after the fork): it starts
    the writer thread.
    """
    if cfg.access == "off":
        return None
    if cfg.access_file in ("", "-"):
        writer = _Writer(sys.stdout.buffer, owned=False)
    else:
        try:
            stream = open(cfg.access_file, "ab")  # noqa: SIM115
        except OSError as exc:
            raise OSError(
                f"log.access_file: cannot open {cfg.access_file}: {exc.strerror or exc}"
            ) from None
        writer = _Writer(stream, owned=True)
    return AccessLog(cfg.access, writer, routes)
