"""A WSGI app for tests/e2e/test_websocket_apps.py: says what it saw of an upgrade."""


def app(environ, start_response):
    body = f"wsgi {environ.get('HTTP_UPGRADE', '-')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
