"""Zero-copy file sending on a connection's socket.

uvloop's ``loop.sendfile()`` is not implemented, so bastion sends with ``os.sendfile`` on
a duplicate of the transport's socket once the transport's own write buffer is empty,
waiting for writability with ``add_writer`` on the duplicate. Where no socket is at hand
(or the body is chunked), it falls back to reading blocks and writing them.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.protocol.http1 import HTTP1Protocol

BLOCK = 256 * 1024
SENDFILE_CHUNK = 4 * 1024 * 1024


async def _wait_empty(proto: HTTP1Protocol) -> None:
    transport = proto.transport
    if transport is None or transport.get_write_buffer_size() == 0:
        return
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        while not proto.closed and transport.get_write_buffer_size() > 0:
            proto.write_paused = True
            await proto.drain()
    finally:
        if not proto.closed:
            from bastion.protocol.settings import WRITE_HIGH_WATER, WRITE_LOW_WATER

            transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _writable(proto: HTTP1Protocol, fd: int) -> None:
    """Wait until ``fd`` takes more data, or the connection ends.

    The wait counts as paused writing, so the connection's write timeout applies: a
    client that stops reading is dropped, and dropping it (``connection_lost``) ends the
    wait, which nothing else would, since ``fd`` keeps the socket open.
    """
    loop = proto.loop
    ready: asyncio.Future[None] = loop.create_future()
    proto.pause_writing()
    proto._drain_waiter = ready
    loop.add_writer(fd, _resolve, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
        if not proto.closed:
            proto.resume_writing()


async def _copy(
    proto: HTTP1Protocol,
    fd: int,
    offset: int,
    count: int,
    frame: Callable[[bytes], bytes] | None,
) -> None:
    loop = proto.loop
    while count > 0 and not proto.closed:
        data = await loop.run_in_executor(None, os.pread, fd, min(BLOCK, count), offset)
        if not data:
            break  # the file shrank: the connection will close on the short body
        offset += len(data)
        count -= len(data)
        proto.transport_write(frame(data) if frame is not None else data)
        await proto.drain()


def cork(proto: HTTP1Protocol, on: bool) -> bool:
    """Set or clear TCP_CORK on the connection (head and file in full packets, as
    nginx's tcp_nopush does); False where it cannot be set."""
    transport = proto.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    option = getattr(socket, "TCP_CORK", None)
    if sock is None or option is None or proto.closed:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, 1 if on else 0)
    except (OSError, AttributeError, ValueError):
        return False
    return True


async def send_file(
    proto: HTTP1Protocol,
    fd: int,
    offset: int,
    count: int,
    frame: Callable[[bytes], bytes] | None,
    *,
    zero_copy: bool,
) -> None:
    """Send ``count`` bytes of ``fd`` from ``offset`` on ``proto``'s connection."""
    transport = proto.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if not zero_copy or sock is None or proto.closed:
        await _copy(proto, fd, offset, count, frame)
        return
    await _wait_empty(proto)
    if proto.closed:
        return
    out = os.dup(sock.fileno())
    try:
        while count > 0 and not proto.closed:
            try:
                sent = os.sendfile(out, fd, offset, min(count, SENDFILE_CHUNK))
            except BlockingIOError:
                await _writable(proto, out)
                continue
            except OSError:
                proto.abort()
                return
            if sent == 0:
                break  # end of file before count: short body, the connection closes
            offset += sent
            count -= sent
    finally:
        os.close(out)
