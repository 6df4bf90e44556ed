"""A proxied request body read whole before it is forwarded (``buffer_request``).

:func:`buffer_body` reads the client's body into memory up to ``buffer_request`` bytes
and into a temporary file beyond; :func:`send_buffered_body` sends it upstream with
its ``Content-Length``, from its start on every try. The temporary file is written and
read by the handler's :class:`DiskThread`, never on the event loop.

The body lives in the request's forward (:mod:`bastion.edge.proxy`: ``body``,
``body_file``, ``body_size``), which decides when to read it, when to send it and when
to drop it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Final

from bastion.protocol.types import ClientDisconnected
from bastion.upstream.connection import UpstreamConnection

if TYPE_CHECKING:
    from bastion.edge.proxy import _Forward

__all__ = ["SPILL_BLOCK", "DiskThread", "buffer_body", "send_buffered_body"]

#: a buffered body goes to and comes from its temporary file in blocks of this size
SPILL_BLOCK: Final = 256 * 1024


def _temporary_file() -> IO[bytes]:
    return tempfile.TemporaryFile(prefix="bastion-body-")


def _read_at(spill: IO[bytes], offset: int) -> bytes:
    return os.pread(spill.fileno(), SPILL_BLOCK, offset)


class DiskThread:
    """The thread that writes and reads a handler's buffered bodies' temporary files
    (made at the first spill): one, so each file's operations run in the order given."""

    __slots__ = ("executor",)

    def __init__(self) -> None:
        self.executor: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        executor = self.executor
        if executor is None:
            executor = self.executor = ThreadPoolExecutor(1, thread_name_prefix="bastion-spill")
        return executor

    def close_file(self, spill: IO[bytes]) -> None:
        """Close ``spill`` after whatever the thread still has to do with it."""
        executor = self.executor
        if executor is None:
            spill.close()
        else:
            try:
                executor.submit(spill.close)
            except RuntimeError:  # the thread is shut down
                spill.close()

    def shutdown(self) -> None:
        executor = self.executor
        if executor is not None:
            self.executor = None
            executor.shutdown(wait=False)


async def buffer_body(forward: _Forward) -> bool:
    """Read the whole request body into ``forward`` (a slow client never holds an
    upstream connection while it uploads); False when the client's connection failed
    (the exchange is failed, nothing is to be forwarded).

    Beyond ``buffer_request`` bytes the body goes to a temporary file, written in
    blocks by the handler's disk thread (never on the event loop); the client is
    not read while a block is being written, so memory stays within a block."""
    exchange = forward.exchange
    limit = forward.handler.cfg.buffer_request
    disk = forward.handler.disk
    memory = bytearray()
    pending = bytearray()  # what the file is still to get
    size = 0
    loop = asyncio.get_running_loop()
    try:
        while True:
            data, more = await exchange.receive_body()
            if data:
                size += len(data)
                if forward.body_file is not None:
                    pending += data
                elif len(memory) + len(data) > limit:
                    forward.body_file = await loop.run_in_executor(disk.get(), _temporary_file)
                    pending += data
                else:
                    memory += data
                spill = forward.body_file
                if spill is not None and (len(pending) >= SPILL_BLOCK or not more):
                    block = pending
                    pending = bytearray()
                    await loop.run_in_executor(disk.get(), spill.write, block)
            if not more:
                break
        spill = forward.body_file
        if spill is not None:
            if pending:
                await loop.run_in_executor(disk.get(), spill.write, pending)
            await loop.run_in_executor(disk.get(), spill.flush)
    except (ClientDisconnected, asyncio.CancelledError, OSError) as exc:
        forward.drop_body()
        exchange.fail(None if isinstance(exc, asyncio.CancelledError) else exc)
        if isinstance(exc, OSError):
            return False
        raise
    forward.body = bytes(memory)
    forward.body_size = size
    return True


async def send_buffered_body(forward: _Forward, conn: UpstreamConnection) -> None:
    """Send the head and the body :func:`buffer_body` read, until the body ends or the
    forward is finished (the upstream answered or failed)."""
    forward.send_head(conn, b"content-length: %d\r\n" % forward.body_size)
    forward.sending = True
    if forward.body:
        conn.write(forward.body)
        await forward.upstream_drain(conn)
    spill = forward.body_file
    if spill is None:
        return
    loop = asyncio.get_running_loop()
    disk = forward.handler.disk.get()
    offset = 0
    while not forward.finished:
        # positioned reads: a retry reads the file again from its start
        chunk = await loop.run_in_executor(disk, _read_at, spill, offset)
        if not chunk:
            break
        offset += len(chunk)
        conn.write(chunk)
        await forward.upstream_drain(conn)
