"""The bastion processes these tests start run the very package the tests imported.

``make test`` runs the suite on the compiled editable install and again on a pure
install; in the pure pass the child processes must not pick up the compiled modules
that sit in the working copy's src/ (the e2e helpers once put src/ on PYTHONPATH).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

from server import APPS, child_env

# a compiled one and an interpreted one
MODULES = ["bastion.protocol.http1", "bastion.gateway.wsgi", "bastion.cli"]


def test_child_imports_the_same_modules_as_the_tests() -> None:
    script = (
        "import importlib, json, sys\n"
        "print(json.dumps([importlib.import_module(n).__file__ for n in sys.argv[1:]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *MODULES],
        cwd=APPS,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    theirs = [os.path.realpath(p) for p in json.loads(out.stdout)]
    ours = [os.path.realpath(str(importlib.import_module(n).__file__)) for n in MODULES]
    assert theirs == ours


def test_dashboard_files_ship_with_the_package() -> None:
    """The admin dashboard's page, script and style are package data: in the pure pass of
    ``make test`` this package was installed from a wheel, so they must be in it."""
    from importlib import resources

    folder = resources.files("bastion.observe.dashboard")
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        data = folder.joinpath(name).read_bytes()
        assert len(data) > 500, name
    assert b"dashboard.js" in folder.joinpath("index.html").read_bytes()
