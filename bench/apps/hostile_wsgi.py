"""The WSGI twin of hostile_asgi.py, for servers that only speak WSGI (gunicorn)."""

HELLO = b"Hello, world!"
BIG = 1024 * 1024


def app(environ, start_response):
    stream = environ["wsgi.input"]
    while stream.read(65536):
        pass
    body = bytes(BIG) if environ["PATH_INFO"] == "/big" else HELLO
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
