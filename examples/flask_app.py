"""A Flask app served by bastion (WSGI).

Run it from this directory::

    bastion serve flask_app:app

Flask views are synchronous: for views that wait on a database or another service, add
``--wsgi-mode threads`` (see docs/choosing-workers.md).
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "Hello from Flask!\n"


@app.get("/hello/<name>")
def hello(name: str) -> dict[str, object]:
    return {"hello": name, "worker_pid": os.getpid()}


@app.post("/echo")
def echo() -> object:
    return jsonify(form=request.form.to_dict(), json=request.get_json(silent=True))
