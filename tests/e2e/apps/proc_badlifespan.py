"""An ASGI app whose lifespan start-up fails: bastion must stop with its message."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send(
                {"type": "lifespan.startup.failed", "message": "cache warm-up failed: no redis"}
            )
        return
    raise RuntimeError("never reached")
