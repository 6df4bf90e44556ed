"""Flask app for the framework end-to-end tests (served as ``fw_flask:app``).

Every framework test app answers the same routes with the same JSON shapes, so one test
module can drive them all: see tests/e2e/test_frameworks.py.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request, url_for

app = Flask(__name__)


@app.get("/json")
def json_view() -> Response:
    return jsonify(framework="flask", pid=os.getpid(), message="hello")


@app.post("/form")
def form_view() -> Response:
    return jsonify(name=request.form.get("name"), colour=request.form.get("colour"))


@app.post("/upload")
def upload_view() -> Response:
    upload = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    while chunk := upload.stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(filename=upload.filename, size=size, sha256=digest.hexdigest())


@app.get("/stream")
def stream_view() -> Response:
    count = int(request.args.get("n", "4"))
    delay = float(request.args.get("delay", "0.3"))

    def chunks() -> Iterator[bytes]:
        for i in range(count):
            if i:
                time.sleep(delay)
            yield f"chunk {i}\n".encode()

    return Response(chunks(), mimetype="text/plain")


@app.get("/events")
def events_view() -> Response:
    """An endless server-sent-events stream; its generator says on stderr when the server
    closed it."""
    ident = request.args.get("id", "")
    delay = float(request.args.get("delay", "0.05"))

    def events() -> Iterator[bytes]:
        i = 0
        try:
            while True:
                yield f"data: tick {i}\n\n".encode()
                i += 1
                time.sleep(delay)
        finally:
            print(f"events ended {ident}", file=sys.stderr, flush=True)

    response = Response(events(), mimetype="text/event-stream")
    # the server calls close() on the response (PEP 3333), which runs these
    response.call_on_close(lambda: print(f"events closed {ident}", file=sys.stderr, flush=True))
    return response


@app.get("/boom")
def boom_view() -> Response:
    raise RuntimeError("deliberate failure fw-boom-marker")


@app.get("/query")
def query_view() -> Response:
    args = {key: request.args.getlist(key) for key in request.args}
    return jsonify(query_string=request.query_string.decode("latin-1"), args=args)


@app.get("/headers")
def headers_view() -> Response:
    return jsonify(
        x_echo=request.headers.get("X-Echo"),
        user_agent=request.headers.get("User-Agent"),
    )


@app.get("/url")
def url_view() -> Response:
    return jsonify(
        json_url=url_for("json_view"),
        root_path=request.script_root,
        path=request.path,
    )
