"""ASGI and WSGI apps for the HTTP/1.1 end-to-end tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes the request: method, path, query, headers and body length/prefix as JSON.

    ``/stream`` answers with 5 chunks, 0.2 s apart, with no Content-Length.
    ``/crash`` sends half a body, then raises.
    ``/big`` answers with 4 MiB, ``/mib`` with 1 MiB (made for each request). ``/slow``
    waits 3 s first. ``/ticks/...`` streams a line every 50 ms (for 20 s at most) while
    it waits for ``http.disconnect`` and prints it when it comes.
    ``/wait-disconnect/...`` reads the request, prints that it waits, then prints the
    next message it receives (within 4 s) and never answers.
    """
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path.startswith("/ticks/"):
        await ticks_until_disconnect(path, receive, send)
        return
    if path.startswith("/wait-disconnect/"):
        while (await receive()).get("more_body"):
            pass
        print(f"http_echo: waiting on {path}", flush=True)
        try:
            message = await asyncio.wait_for(receive(), 4)
        except TimeoutError:
            print(f"http_echo: no message in 4 s on {path}", flush=True)
            return
        print(f"http_echo: {message['type']} on {path}", flush=True)
        return
    if path == "/crash":
        # a response cut short by the app: half a body, then an exception
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half of it", "more_body": True})
        raise RuntimeError("the app failed in the middle of its response")
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b""})
        return
    if path in ("/big", "/mib"):
        body = b"x" * (4 * 1024 * 1024 if path == "/big" else 1024 * 1024)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/slow":
        await asyncio.sleep(3)
    size = 0
    first = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if len(first) < 64:
            first += chunk[: 64 - len(first)]
        size += len(chunk)
        if not message.get("more_body"):
            break
    out = {
        "method": scope["method"],
        "path": path,
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body_size": size,
        "body_start": first.decode("latin-1"),
        "client": list(scope["client"]) if scope["client"] else None,
    }
    data = json.dumps(out).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def ticks_until_disconnect(path: str, receive: Any, send: Any) -> None:
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        print(f"http_echo: http.disconnect on {path}", flush=True)
        gone.set()

    watcher = asyncio.create_task(watch())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(400):
        if gone.is_set():
            return
        await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
        await asyncio.sleep(0.05)
    watcher.cancel()
    await send({"type": "http.response.body", "body": b""})


async def injector(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Tries to put CR/LF into a response header."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"x-evil", b"a\r\nset-cookie: stolen=1")],
        }
    )
    await send({"type": "http.response.body", "body": b"should never be sent"})


def wsgi_injector(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: stolen=1")])
    return [b"should never be sent"]


async def header_lists(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Sends its headers as lists and as a tuple, both of which ASGI servers accept."""
    if scope["type"] != "http":
        return
    headers = ([b"content-type", b"text/plain"], (b"x-pair", b"tuple"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"lists ok"})
