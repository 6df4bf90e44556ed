"""WhiteNoise serving a directory at ``/s/`` in front of a WSGI app that answers 404.

The directory comes from ``BENCH_STATIC_ROOT`` (bench/static.py sets it). WhiteNoise's
production mode: the files are indexed once at start-up (``autorefresh`` off) and sent
with the server's ``wsgi.file_wrapper``. Run on gunicorn:
``gunicorn --chdir bench/static_apps whitenoise_static:app``.
"""

import os

from whitenoise import WhiteNoise

ROOT = os.environ["BENCH_STATIC_ROOT"]


def not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


app = WhiteNoise(not_found, root=ROOT, prefix="s/")
