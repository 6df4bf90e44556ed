"""The WSGI gateway's streams: ``wsgi.input`` and ``wsgi.file_wrapper`` (``wsgi.errors``
is :mod:`bastion.gateway.wsgi_errors`).

``wsgi.input`` is always a complete, in-memory (or, above 1 MiB, spooled to a temporary
file) copy of the request body, read before the app is called: reading it never blocks,
so a slow client never holds a thread or the event loop.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from tempfile import SpooledTemporaryFile
from typing import IO, Any, Final

from bastion.protocol.types import Exchange

__all__ = ["SPOOL_LIMIT", "FileWrapper", "read_body", "regular_file"]

SPOOL_LIMIT: Final = 1024 * 1024  # bodies up to 1 MiB stay in memory (nginx client_body_buffer_size
#                            is 8-16k; larger buffers cost little and save disk writes)


async def read_body(exchange: Exchange) -> IO[bytes]:
    """Receive the whole body into a spooled file, rewound; raises ClientDisconnected."""
    spool: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(max_size=SPOOL_LIMIT)  # noqa: SIM115
    try:
        while True:
            data, more = await exchange.receive_body()
            if data:
                spool.write(data)
            if not more:
                break
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


class FileWrapper:
    """``wsgi.file_wrapper``: lets an app return a file for the server to send.

    When the file is a regular file with a descriptor and the response declares a
    Content-Length, bastion sends it zero-copy from the file's current position;
    otherwise it is read in blocks of ``block_size`` bytes.
    """

    __slots__ = ("block_size", "filelike")

    def __init__(self, filelike: Any, block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        size = self.block_size
        while True:
            block = read(size)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def regular_file(wrapper: FileWrapper) -> tuple[int, int, int] | None:
    """``(fd, position, bytes left)`` if the wrapped object is a regular file, else None."""
    filelike = wrapper.filelike
    try:
        fd = filelike.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        pos = filelike.tell() if hasattr(filelike, "tell") else os.lseek(fd, 0, os.SEEK_CUR)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    if not isinstance(fd, int) or not isinstance(pos, int):
        return None
    return fd, pos, max(0, st.st_size - pos)
