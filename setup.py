"""Build script: compiles bastion's per-request modules to C with mypyc.

The compiled modules are the same typed Python as the sources, made into extension
modules; on this project's benchmark (bench/inprocess.py) they cut the CPU bastion spends
per request by roughly a quarter. ``BASTION_COMPILE=0`` installs pure Python instead (the
same behaviour, slower), which is also what happens where mypyc or a C compiler is
missing. ``BASTION_COMPILE=1`` makes the compiled build a requirement: where it cannot
be made, the install fails with mypyc's or the compiler's reason instead of falling
back (the project's own builds ask for it, so that a build that silently lost its
compiled modules cannot pass for one that has them). All other metadata lives in pyproject.toml.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

# Modules on the path of every request. Everything else stays interpreted.
COMPILED = [
    "src/bastion/protocol/errors.py",
    "src/bastion/protocol/fields.py",
    "src/bastion/protocol/flow.py",
    "src/bastion/protocol/head.py",
    "src/bastion/protocol/state.py",
    "src/bastion/protocol/h1_exchange.py",
    "src/bastion/protocol/h1_head.py",
    "src/bastion/protocol/h1_framing.py",
    "src/bastion/protocol/h1_reader.py",
    "src/bastion/protocol/http1.py",
    "src/bastion/protocol/tls_transport.py",
    "src/bastion/edge/conditional.py",
    "src/bastion/edge/wrap.py",
    "src/bastion/edge/headers.py",
    "src/bastion/edge/compress.py",
    "src/bastion/edge/negotiate.py",
    "src/bastion/edge/match.py",
    "src/bastion/edge/pipeline.py",
    "src/bastion/edge/router.py",
    "src/bastion/edge/static.py",
    "src/bastion/edge/static_cache.py",
    "src/bastion/edge/respond.py",
    "src/bastion/edge/proxy.py",
    "src/bastion/edge/proxy_buffer.py",
    "src/bastion/edge/proxy_headers.py",
    "src/bastion/observe/requestid.py",
    "src/bastion/upstream/balancers.py",
    "src/bastion/upstream/budget.py",
    "src/bastion/upstream/connection.py",
    "src/bastion/upstream/group.py",
    "src/bastion/upstream/server.py",
    "src/bastion/upstream/tunnel.py",
    "src/bastion/gateway/failure.py",
    "src/bastion/gateway/asgi.py",
    "src/bastion/gateway/wsgi.py",
    "src/bastion/gateway/wsgi_environ.py",
    "src/bastion/gateway/wsgi_io.py",
    "src/bastion/gateway/wsgi_response.py",
    "src/bastion/gateway/wsgi_threads.py",
]


def remove_stale_builds() -> None:
    """Delete extension modules of an earlier compiled install from the source tree, so
    they cannot shadow the Python sources of a pure install."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder, _, files in os.walk(os.path.join(here, "src")):
        for name in files:
            if name.endswith(".so") and ("__mypyc" in name or "bastion" in folder):
                os.remove(os.path.join(folder, name))


def required() -> bool:
    return os.environ.get("BASTION_COMPILE", "") == "1"


class OptionalBuildExt(build_ext):  # type: ignore[misc]
    """Compiling the C that mypyc wrote needs a C compiler and Python's headers: where
    they are missing, install pure Python instead (or fail, with BASTION_COMPILE=1)."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, PlatformError, OSError) as exc:
            if required():
                raise SystemExit(
                    f"bastion: BASTION_COMPILE=1 but the C build failed ({exc}); "
                    "BASTION_COMPILE=0 installs pure Python"
                ) from exc
            print(f"bastion: not compiling ({exc}); installing pure Python", file=sys.stderr)
            self.extensions: list[Any] = []
            remove_stale_builds()


def ext_modules() -> list[Any]:
    wanted = os.environ.get("BASTION_COMPILE", "")
    if wanted == "0":
        remove_stale_builds()
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if required():
            raise SystemExit("bastion: BASTION_COMPILE=1 but mypyc is not installed") from None
        print("bastion: mypyc is not available; installing pure Python", file=sys.stderr)
        remove_stale_builds()
        return []
    try:
        return list(mypycify(COMPILED, opt_level="3"))
    except (Exception, SystemExit) as exc:  # mypyc refused, or no compiler
        if required():
            raise SystemExit(f"bastion: BASTION_COMPILE=1 but mypyc refused: {exc}") from exc
        print(f"bastion: not compiling ({exc}); installing pure Python", file=sys.stderr)
        remove_stale_builds()
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
