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
