"""An 8 KiB JSON response for the compression workload.

``app`` answers the body as it is: bastion serves it with ``[compress]`` on
(``compress.toml``). ``with_middleware`` is the same app inside Starlette's
``GZipMiddleware`` at bastion's default gzip level, what a user of a server without
compression adds to the app. The body is built once, the same for every server; it has
no ``ETag``, so every response is compressed again.
"""

import json

from raw_asgi import lifespan

ITEMS = [
    {
        "id": i,
        "name": f"item {i}",
        "price": round(i * 1.37, 2),
        "tags": ["a", "b", "c"][: 1 + i % 3],
    }
    for i in range(120)
]
BODY = json.dumps({"items": ITEMS}).encode()  # 8,098 bytes; 1,291 gzipped at level 5
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
GZIP_LEVEL = 5  # bastion's compress.gzip_level default


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    # a new list each time: a middleware may change the one it is given
    await send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})
    await send({"type": "http.response.body", "body": BODY})


def _wrapped():
    try:
        from starlette.middleware.gzip import GZipMiddleware
    except ImportError:  # (bastion serves ``app``: it needs no Starlette)
        return None
    return GZipMiddleware(app, minimum_size=1024, compresslevel=GZIP_LEVEL)


with_middleware = _wrapped()
