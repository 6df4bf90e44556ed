"""An ASGI app that answers with what it was told about the request, as JSON."""

import json


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps(
        {
            "app": "asgi",
            "root_path": scope["root_path"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
