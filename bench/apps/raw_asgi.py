"""Framework-free ASGI apps: the least work an ASGI server can be asked to do.

``hello`` answers every request with a 13-byte text body; ``echo`` sends the request
body back. Both answer the lifespan protocol so that every server starts them the same
way.
"""

HELLO = b"Hello, world!"

TEXT_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def lifespan(receive, send):
    """The lifespan protocol, with nothing to start or stop (the other apps here use it)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": TEXT_HEADERS})
    await send({"type": "http.response.body", "body": HELLO})


async def echo(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
