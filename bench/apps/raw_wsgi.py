"""Framework-free WSGI apps: the least work a WSGI server can be asked to do.

``hello`` answers every request with a 13-byte text body; ``echo`` reads the request
body (``wsgi.input`` with ``CONTENT_LENGTH``, as PEP 3333 asks) and sends it back.
"""

HELLO = b"Hello, world!"

_TEXT_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]


def hello(environ, start_response):
    start_response("200 OK", _TEXT_HEADERS)
    return [HELLO]


def echo(environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]
