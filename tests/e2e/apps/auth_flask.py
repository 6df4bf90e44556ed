"""A Flask app that shows what authentication handed it (tests/e2e/test_auth.py)."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

app = Flask(__name__)


@app.route("/", defaults={"rest": ""})
@app.route("/<path:rest>")
def show(rest: str) -> dict[str, Any]:
    return {
        "remote_user": request.environ.get("REMOTE_USER"),
        "auth": request.environ.get("bastion.auth"),
        "header": request.headers.get("X-Remote-User"),
    }
