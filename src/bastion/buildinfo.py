"""Which modules run compiled, and whether any compiled module is older than its source.

bastion compiles its per-request modules with mypyc at install time (see setup.py). In
a working copy installed in editable mode the compiled files sit next to the sources,
and Python prefers them: an edited source has no effect until the next install. This
module lets the command line warn about that instead of running stale code silently.
"""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def compiled_modules() -> list[Path]:
    """Extension modules inside the package folder that this Python would load (an
    editable install built for several versions also holds, say,
    ``http1.cpython-312-x86_64-linux-gnu.so``, which Python 3.11 never loads)."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    found = []
    for path in _PACKAGE.rglob("*.so"):
        name = path.name
        for suffix in suffixes:
            if name.endswith(suffix) and "." not in name[: -len(suffix)]:
                found.append(path)
                break
    return found


def stale_compiled_modules() -> list[str]:
    """Sources (relative paths) newer than their compiled module."""
    stale = []
    for ext in compiled_modules():
        source = ext.with_name(ext.name.split(".", 1)[0] + ".py")
        try:
            if source.stat().st_mtime > ext.stat().st_mtime + 1.0:
                stale.append(os.path.relpath(source, _PACKAGE.parent))
        except OSError:
            continue
    return sorted(stale)
