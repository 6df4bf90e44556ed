"""Sending a file as a response body on a connection's :class:`~bastion.protocol.flow.Flow`.

uvloop's ``loop.sendfile()`` is not implemented, so bastion sends with ``os.sendfile`` on
a duplicate of the connection's socket once the transport's own write buffer is empty,
waiting for writability on the duplicate (:meth:`Flow.wait_writable`). Where no socket
is at hand (TLS: the bytes must be encrypted) or the body is chunked, it reads blocks
and writes them instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bastion.protocol.flow import Flow

__all__ = ["BLOCK", "SENDFILE_CHUNK", "send_file"]

BLOCK = 256 * 1024
SENDFILE_CHUNK = 4 * 1024 * 1024


async def _copy(
    flow: Flow, fd: int, offset: int, count: int, frame: Callable[[bytes], bytes] | None
) -> int:
    loop = flow.loop
    done = 0
    while count > 0 and not flow.closed:
        data = await loop.run_in_executor(None, os.pread, fd, min(BLOCK, count), offset)
        if not data:
            break  # the file shrank: the connection will close on the short body
        offset += len(data)
        count -= len(data)
        done += len(data)
        flow.write(frame(data) if frame is not None else data)
        await flow.drain()
    return done


async def send_file(
    flow: Flow,
    fd: int,
    offset: int,
    count: int,
    frame: Callable[[bytes], bytes] | None,
    *,
    zero_copy: bool,
) -> int:
    """Send ``count`` bytes of ``fd`` from ``offset`` on ``flow``'s connection;
    ``frame`` wraps each block (chunked framing) when copying. Returns how many bytes
    of the file went out: fewer than ``count`` if the file is shorter (the caller's
    response is then short of its length) or the connection ended."""
    sock = flow.socket() if zero_copy else None
    if sock is None:
        return await _copy(flow, fd, offset, count, frame)
    await flow.wait_empty()
    if flow.closed:
        return 0
    done = 0
    out = os.dup(sock.fileno())
    try:
        while count > 0 and not flow.closed:
            try:
                sent = os.sendfile(out, fd, offset, min(count, SENDFILE_CHUNK))
            except BlockingIOError:
                await flow.wait_writable(out)
                continue
            except OSError:
                flow.abort()
                return done
            if sent == 0:
                break  # end of file before count: short body, the connection closes
            flow.sent_directly(sent)
            offset += sent
            count -= sent
            done += sent
    finally:
        os.close(out)
        flow.writing_freely()
    return done
