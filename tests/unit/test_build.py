"""The installed package is the compiled one, unless a pure install was asked for."""

from __future__ import annotations

import importlib
import os

import pytest

from bastion import __file__ as package_file

COMPILED = [
    "bastion.protocol.http1",
    "bastion.protocol.h1_exchange",
    "bastion.gateway.asgi",
    "bastion.gateway.wsgi",
    "bastion.gateway.wsgi_threads",
]


@pytest.mark.skipif(
    os.environ.get("BASTION_COMPILE", "1") == "0", reason="pure Python install asked for"
)
@pytest.mark.parametrize("name", COMPILED)
def test_per_request_modules_are_compiled(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert module.__file__.endswith(".so"), (
        f"{name} is interpreted ({module.__file__}): the mypyc build fell back to pure "
        f"Python; reinstall and read the build output (package at {package_file})"
    )


def test_no_compiled_module_is_older_than_its_source() -> None:
    from bastion.buildinfo import stale_compiled_modules

    assert stale_compiled_modules() == []


def test_a_stale_compiled_module_is_reported(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    import bastion.buildinfo as buildinfo

    pkg = Path(str(tmp_path)) / "bastion"
    (pkg / "protocol").mkdir(parents=True)
    ext = pkg / "protocol" / "http1.cpython-311-x86_64-linux-gnu.so"
    src = pkg / "protocol" / "http1.py"
    ext.write_bytes(b"")
    src.write_text("")
    os.utime(ext, (1_000_000, 1_000_000))
    monkeypatch.setattr(buildinfo, "_PACKAGE", pkg)
    assert buildinfo.stale_compiled_modules() == ["bastion/protocol/http1.py"]
