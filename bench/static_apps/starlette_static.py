"""Starlette's ``StaticFiles`` mounted at ``/s`` in a Starlette app, as an app would do it.

The directory comes from ``BENCH_STATIC_ROOT`` (bench/static.py sets it). Run on uvicorn:
``uvicorn starlette_static:app --app-dir bench/static_apps``.
"""

import os

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

ROOT = os.environ["BENCH_STATIC_ROOT"]

app = Starlette(routes=[Mount("/s", app=StaticFiles(directory=ROOT), name="static")])
