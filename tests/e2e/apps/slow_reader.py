"""An ASGI app with responses larger than the kernel buffers of a loopback connection."""

from __future__ import annotations

import os
from typing import Any

BIG = b"x" * (32 * 1024 * 1024)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/big`` answers 32 MiB at once; ``/file?PATH`` sends the file at PATH
    (pathsend, with a Content-Length, so zero-copy); ``/first-ten?PATH`` the same with a
    Content-Length of 10."""
    if scope["type"] != "http":
        return
    if scope["path"] in ("/file", "/first-ten"):
        path = scope["query_string"].decode()
        # /first-ten: a length smaller than the file (a file that grew since it was
        # measured): only that many bytes may go out
        size = b"10" if scope["path"] == "/first-ten" else str(os.path.getsize(path)).encode()
        headers = [(b"content-length", size)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": path})
        return
    headers = [(b"content-length", str(len(BIG)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BIG})
