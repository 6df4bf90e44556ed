"""An ASGI app for the compression and response-header tests.

- ``/json``: about 10 KB of JSON with a Content-Length and a strong ETag, in one body;
- ``/chunks``: the same JSON sent in several body messages without a length;
- ``/small``: a short text body;
- ``/png``: bytes labelled ``image/png`` (not compressible);
- ``/no-transform``: JSON marked ``Cache-Control: no-transform``;
- ``/encoded``: a body the app gzipped itself (``Content-Encoding: gzip``);
- ``/events``: server-sent events; each event after the first waits for a request to
  ``/next``, so a client only sees event N+1 after asking for it: a response held back
  by a buffer anywhere would stall the test instead of passing it;
- ``/powered``: sends ``X-Powered-By`` and its own ``X-Frame-Options``.

Everything is also answered below ``/plain/`` (the tests mount it there a second time).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

DOC = json.dumps(
    [
        {"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "active": i % 3 == 0}
        for i in range(140)
    ]
).encode()

_next: asyncio.Queue[None] | None = None


def _queue() -> asyncio.Queue[None]:
    global _next
    if _next is None:
        _next = asyncio.Queue()
    return _next


async def _answer(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path.startswith("/plain/"):  # the same app, mounted again below /plain/
        path = path[len("/plain") :]
    json_type = (b"content-type", b"application/json")
    if path == "/json":
        await _answer(
            send,
            200,
            [json_type, (b"content-length", b"%d" % len(DOC)), (b"etag", b'"doc-v1"')],
            DOC,
        )
    elif path == "/chunks":
        await send({"type": "http.response.start", "status": 200, "headers": [json_type]})
        step = 1000
        for i in range(0, len(DOC), step):
            await send({"type": "http.response.body", "body": DOC[i : i + step], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/small":
        await _answer(send, 200, [(b"content-type", b"text/plain")], b"tiny")
    elif path == "/png":
        await _answer(send, 200, [(b"content-type", b"image/png")], DOC)
    elif path == "/no-transform":
        await _answer(send, 200, [json_type, (b"cache-control", b"no-transform")], DOC)
    elif path == "/encoded":
        await _answer(
            send, 200, [json_type, (b"content-encoding", b"gzip")], gzip.compress(DOC, mtime=0)
        )
    elif path == "/events":
        queue = _queue()
        while not queue.empty():
            queue.get_nowait()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        for i in range(3):
            if i:
                await queue.get()
            event = b"id: %d\ndata: event number %d\n\n" % (i, i)
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/next":
        _queue().put_nowait(None)
        await _answer(send, 200, [(b"content-type", b"text/plain")], b"ok")
    elif path == "/powered":
        await _answer(
            send,
            200,
            [
                (b"content-type", b"text/html"),
                (b"x-powered-by", b"SomeFramework/1.0"),
                (b"x-frame-options", b"SAMEORIGIN"),
            ],
            b"<p>hello</p>",
        )
    else:
        await _answer(send, 404, [(b"content-type", b"text/plain")], b"not found")
