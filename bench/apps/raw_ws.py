"""A framework-free ASGI WebSocket echo: the least work a server's WebSocket can be asked to do.

``echo`` accepts every WebSocket and sends each message back as it came (text as text,
bytes as bytes) until the client goes away. A plain HTTP request gets a 13-byte hello.
It answers the lifespan protocol so that every server starts it the same way.
"""

from raw_asgi import HELLO, TEXT_HEADERS, lifespan


async def echo(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await lifespan(receive, send)
        return
    if kind == "http":
        await send({"type": "http.response.start", "status": 200, "headers": TEXT_HEADERS})
        await send({"type": "http.response.body", "body": HELLO})
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
