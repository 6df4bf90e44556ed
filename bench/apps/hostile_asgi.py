"""The app of bench/hostile.py: hello on ``/``, a 1 MiB body on ``/big``, and any POST
body read to its end and counted.

The 1 MiB body is made per request (as a template or a JSON encoder would), so that a
server which keeps whole responses for slow readers shows it in its memory.
"""

from raw_asgi import HELLO, lifespan

BIG = 1024 * 1024


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    received = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/big":
        body = bytes(BIG)
    elif scope["method"] == "POST":
        body = str(received).encode()
    else:
        body = HELLO
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
