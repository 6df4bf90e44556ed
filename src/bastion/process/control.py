"""The control pipe: what a worker tells its supervisor.

Each worker gets the write end of its own pipe. Messages are single JSON lines:

* ``{"kind": "ready", "interface": "asgi"}`` -- app loaded, lifespan start-up done,
  listening; the worker takes requests from now on.
* ``{"kind": "failed", "message": "..."}`` -- the worker cannot start; ``message`` is the
  app's own error (import error, lifespan failure) for the supervisor to show.
* ``{"kind": "recycle"}`` -- ``max_requests`` reached; please start my replacement.

Messages are tiny and rare, so the worker writes them with one blocking ``write``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Literal

import msgspec

MessageKind = Literal["ready", "failed", "recycle"]


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    kind: MessageKind
    interface: str = ""
    message: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


class ControlWriter:
    """The worker's end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, message: Message) -> None:
        data = _encoder.encode(message) + b"\n"
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except OSError:
            pass  # the supervisor is gone; nothing to tell anyone

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class ControlReader:
    """The supervisor's end: non-blocking, split into messages."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._buffer = b""
        self.closed = False

    def read(self) -> Iterator[Message]:
        """Yield every complete message available now."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                yield _decoder.decode(line)
            except msgspec.DecodeError:
                continue

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
