"""Apps that report what they learn about the TLS connection, for tests/e2e/test_tls.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any


async def asgi_app(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope["scheme"]})
        await send({"type": "websocket.close"})
        return
    if scope["path"] == "/slow":
        import asyncio

        await asyncio.sleep(float(scope["query_string"] or b"1"))
    tls = scope["extensions"].get("tls")
    body = json.dumps(
        {"scheme": scope["scheme"], "tls": tls, "pid": os.getpid(), "client": scope["client"]}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    keys = {k: v for k, v in environ.items() if k.startswith("SSL_") or k == "HTTPS"}
    keys["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    body = json.dumps(keys).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
