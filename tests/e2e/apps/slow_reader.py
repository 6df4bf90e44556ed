"""An ASGI app with responses larger than the kernel buffers of a loopback connection."""

from __future__ import annotations

import os
from typing import Any

BIG = b"x" * (32 * 1024 * 1024)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/big`` answers 32 MiB at once; ``/file?PATH`` sends the file at PATH
    (pathsend, with a Content-Length, so zero-copy)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/file":
        path = scope["query_string"].decode()
        size = str(os.path.getsize(path)).encode()
        headers = [(b"content-length", size)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": path})
        return
    headers = [(b"content-length", str(len(BIG)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BIG})
