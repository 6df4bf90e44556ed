"""An ASGI app that sends response trailers (the http.response.trailers extension)."""

from __future__ import annotations

import hashlib
from typing import Any

PARTS = (b"hello ", b"world")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    path = scope["path"]
    headers = [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-count")]
    if path == "/length":
        headers.append((b"content-length", str(sum(map(len, PARTS))).encode()))
    offered = "http.response.trailers" in scope["extensions"]
    headers.append((b"x-offered", b"yes" if offered else b"no"))
    await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
    digest = hashlib.sha256()
    for part in PARTS:
        digest.update(part)
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    await send(
        {
            "type": "http.response.trailers",
            "headers": [(b"x-checksum", digest.hexdigest().encode())],
            "more_trailers": True,
        }
    )
    await send(
        {
            "type": "http.response.trailers",
            # a framing field is never a trailer: dropped
            "headers": [[b"x-count", b"2"], (b"content-length", b"99")],
            "more_trailers": False,
        }
    )
