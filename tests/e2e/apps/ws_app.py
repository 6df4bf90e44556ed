"""A plain ASGI app for the WebSocket end-to-end tests (``ws_app:app``).

Paths (the query string picks options):

* ``/echo``: accepts (with the first offered subprotocol of ``chat``, ``superchat``),
  sends back every message as it came (text as text, bytes as bytes) and prints the
  ``websocket.disconnect`` it gets, as ``ws_app: disconnect CODE REASON``.
* ``/info``: accepts with an extra header, sends the scope's fields as JSON, then echoes.
* ``/close?code=C&reason=R``: accepts, then closes with that code and reason.
* ``/close-early``: closes before accepting (403).
* ``/deny``: answers 401 with a body instead of accepting (Denial Response).
* ``/crash``: accepts, then raises (1011); ``/crash-early`` raises before accepting (500).
* ``/return-early``: returns without accepting (500); ``/return``: accepts, returns (1000).
* ``/sink``: accepts, sends ``ready`` and receives nothing for 30 s, then reports how
  many messages it can read in 1 s (backpressure).
* ``/count``: accepts and prints how many messages it received when the client leaves.
* ``/mark``: accepts and prints each text message it receives, as ``ws_app: mark TEXT``.
* ``/flood?size=N``: accepts and sends messages of N bytes (64 KiB) until ``send``
  fails, then prints how long that took and what it raised.
* HTTP requests get ``http``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qs


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]}
        )
        await send({"type": "http.response.body", "body": b"http"})
        return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    assert (await receive())["type"] == "websocket.connect"
    if path == "/close-early":
        await send({"type": "websocket.close"})
        return
    if path == "/deny":
        body = b"not you"
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body[:3], "more_body": True})
        await send({"type": "websocket.http.response.body", "body": body[3:]})
        return
    if path == "/crash-early":
        raise RuntimeError("ws_app: crash before accept")
    if path == "/return-early":
        return
    offered = scope["subprotocols"]
    chosen = next((p for p in offered if p in ("chat", "superchat")), None)
    headers = [(b"x-extra", b"1")] if path == "/info" else []
    await send({"type": "websocket.accept", "subprotocol": chosen, "headers": headers})
    if path == "/return":
        return
    if path == "/crash":
        raise RuntimeError("ws_app: crash after accept")
    if path == "/close":
        code = int(query.get("code", "1000"))
        await send({"type": "websocket.close", "code": code, "reason": query.get("reason", "")})
        message = await receive()
        print(f"ws_app: after close {message['type']} {message.get('code')}", flush=True)
        return
    if path == "/info":
        info = {
            "path": path,
            "raw_path": scope["raw_path"].decode(),
            "query_string": scope["query_string"].decode(),
            "scheme": scope["scheme"],
            "http_version": scope["http_version"],
            "subprotocols": offered,
            "spec_version": scope["asgi"].get("spec_version"),
            "origin": dict(scope["headers"]).get(b"origin", b"").decode(),
            "extensions": sorted(scope.get("extensions", {})),
        }
        await send({"type": "websocket.send", "text": json.dumps(info)})
    if path == "/flood":
        # sends until it cannot: to a client that reads nothing, send() blocks, and must
        # end once the session is over
        sent = 0
        started = time.monotonic()
        message = b"f" * int(query.get("size", "65536"))
        try:
            while True:
                await send({"type": "websocket.send", "bytes": message})
                sent += 1
        except Exception as exc:
            took = time.monotonic() - started
            print(f"ws_app: flood ended after {took:.1f} s: {type(exc).__name__}", flush=True)
        return
    if path == "/sink":
        await send({"type": "websocket.send", "text": "ready"})
        await asyncio.sleep(float(query.get("wait", "30")))
        count = 0
        try:
            while True:
                message = await asyncio.wait_for(receive(), 1.0)
                if message["type"] != "websocket.receive":
                    break
                count += 1
        except TimeoutError:
            pass
        print(f"ws_app: sink read {count}", flush=True)
        return
    count = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(
                f"ws_app: disconnect {message['code']} {message.get('reason', '')!r} after {count}",
                flush=True,
            )
            return
        count += 1
        if path == "/count":
            continue
        if path == "/mark":
            print(f"ws_app: mark {message.get('text')}", flush=True)
            continue
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
