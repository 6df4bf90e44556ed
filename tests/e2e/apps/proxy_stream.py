"""An ASGI backend for the proxy's streaming tests.

``GET /download/N`` streams N MiB (256 KiB chunks, no Content-Length). ``POST /upload``
waits ``?wait`` seconds (default 0), then reads the body and answers its size.
"""

from __future__ import annotations

import asyncio
from typing import Any

CHUNK = b"z" * (256 * 1024)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path.startswith("/download/"):
        chunks = int(path.rsplit("/", 1)[1]) * 4
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    query = scope["query_string"].decode()
    if query.startswith("wait="):
        await asyncio.sleep(float(query[5:]))
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
