"""A Flask app returning a small JSON object: a typical WSGI framework workload."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(message="Hello, world!", id=1, ok=True)
