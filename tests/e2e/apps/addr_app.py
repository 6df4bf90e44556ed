"""Apps that answer with the client address, scheme, host and path they were given."""

import json


async def app(scope, receive, send):
    if scope["type"] not in ("http", "websocket"):
        return
    headers = dict(scope["headers"])
    info = {
        "app": "asgi",
        "client": list(scope["client"]) if scope["client"] else None,
        "scheme": scope["scheme"],
        "host": headers.get(b"host", b"").decode("latin-1"),
        "path": scope["path"],
    }
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(info)})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(info).encode()})


def wsgi_app(environ, start_response):
    info = {
        "app": "wsgi",
        "client": [environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")],
        "scheme": environ["wsgi.url_scheme"],
        "host": environ.get("HTTP_HOST", ""),
        "path": environ["SCRIPT_NAME"] + environ["PATH_INFO"],
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(info).encode()]
