"""The installed package is the compiled one, unless a pure install was asked for.

The modules meant to be compiled are read from setup.py's ``COMPILED`` list, so the test
follows that list. ``make test`` runs the suite on the compiled install, then again on a
pure install with ``BASTION_COMPILE=0`` set, where every module must be interpreted.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import os
import types
from pathlib import Path

import pytest

import bastion
from bastion import __file__ as package_file

SETUP = Path(__file__).resolve().parents[2] / "setup.py"
PURE = os.environ.get("BASTION_COMPILE", "1") == "0"


def compiled_list() -> list[str]:
    """setup.py's COMPILED, read without running setup.py."""
    tree = ast.parse(SETUP.read_text(), str(SETUP))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "COMPILED"
        ):
            paths = ast.literal_eval(node.value)
            assert isinstance(paths, list) and all(isinstance(p, str) for p in paths)
            return [p.removeprefix("src/").removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError(f"no COMPILED list in {SETUP}")


COMPILED = compiled_list()


def test_make_rebuilds_when_any_compiled_module_changes() -> None:
    # the Makefile's stamp depends on COMPILED_SRC: a compiled module outside it would
    # keep its old compiled code after an edit (make says "up to date")
    import fnmatch
    import re

    makefile = (SETUP.parent / "Makefile").read_text()
    found = re.search(r"^COMPILED_SRC := \$\(wildcard (.*?)\)$", makefile, re.M | re.S)
    assert found is not None
    patterns = found.group(1).replace("\\\n", " ").split()
    for module in COMPILED:
        path = "src/" + module.replace(".", "/") + ".py"
        assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), path


def test_the_compiled_list_names_real_modules() -> None:
    assert len(COMPILED) >= 10, COMPILED  # the per-request modules, not a stub
    assert len(set(COMPILED)) == len(COMPILED)
    src = SETUP.parent / "src"
    for name in COMPILED:
        assert (src / (name.replace(".", "/") + ".py")).is_file(), name


def functions_of(name: str) -> dict[str, object]:
    """The functions and methods ``name`` defines, by qualified name."""
    module = importlib.import_module(name)
    found: dict[str, object] = {}
    for attr, value in vars(module).items():
        if getattr(value, "__module__", None) != name:
            continue
        if isinstance(value, type):
            for method, f in vars(value).items():
                if isinstance(f, staticmethod | classmethod):
                    f = f.__func__  # the function inside, as mypyc would compile it
                if callable(f) and not isinstance(f, type):
                    found[f"{attr}.{method}"] = f
        elif isinstance(value, types.FunctionType | types.BuiltinFunctionType):
            found[attr] = value  # a function (not an instance that can be called)
    return found


@pytest.mark.skipif(PURE, reason="pure Python install asked for")
@pytest.mark.parametrize("name", COMPILED)
def test_per_request_modules_are_compiled(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        f"{name} is interpreted ({module.__file__}): the mypyc build fell back to pure "
        f"Python; reinstall and read the build output (package at {package_file})"
    )
    # mypyc makes its functions native; only a few generated ones stay Python functions
    functions = functions_of(name)
    native = [q for q, f in functions.items() if not isinstance(f, types.FunctionType)]
    assert native, f"{name}: every function is interpreted: {sorted(functions)}"


@pytest.mark.skipif(not PURE, reason="compiled install")
@pytest.mark.parametrize("name", COMPILED)
def test_per_request_modules_are_interpreted(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert module.__file__.endswith(".py"), (
        f"{name} is compiled ({module.__file__}) in a pure install: a compiled module "
        f"shadows the source (package at {package_file})"
    )
    functions = functions_of(name)
    assert functions, f"{name} defines no function to check"
    native = [q for q, f in functions.items() if not isinstance(f, types.FunctionType)]
    assert native == [], f"{name}: compiled functions in a pure install"


@pytest.mark.skipif(not PURE, reason="compiled install")
def test_a_pure_install_has_no_extension_module() -> None:
    from bastion.buildinfo import compiled_modules

    assert compiled_modules() == [], f"compiled files in {Path(bastion.__file__).parent}"


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
    ext = pkg / "protocol" / ("http1" + importlib.machinery.EXTENSION_SUFFIXES[0])
    src = pkg / "protocol" / "http1.py"
    ext.write_bytes(b"")
    src.write_text("")
    os.utime(ext, (1_000_000, 1_000_000))
    monkeypatch.setattr(buildinfo, "_PACKAGE", pkg)
    assert buildinfo.stale_compiled_modules() == ["bastion/protocol/http1.py"]


def test_a_module_compiled_for_another_python_is_not_reported(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editable install built for several Pythons holds their compiled files side by
    side: only those this Python loads can be stale for it."""
    from pathlib import Path

    import bastion.buildinfo as buildinfo

    pkg = Path(str(tmp_path)) / "bastion"
    (pkg / "protocol").mkdir(parents=True)
    src = pkg / "protocol" / "http1.py"
    src.write_text("")
    other = pkg / "protocol" / "http1.cpython-399-x86_64-linux-gnu.so"
    other.write_bytes(b"")
    os.utime(other, (1_000_000, 1_000_000))
    monkeypatch.setattr(buildinfo, "_PACKAGE", pkg)
    assert buildinfo.stale_compiled_modules() == []
    ours = pkg / "protocol" / ("http1" + importlib.machinery.EXTENSION_SUFFIXES[0])
    ours.write_bytes(b"")
    os.utime(ours, (1_000_000, 1_000_000))
    assert buildinfo.stale_compiled_modules() == ["bastion/protocol/http1.py"]


_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement, not C


def test_compiled_classes_derive_from_no_c_type_but_object_and_exceptions() -> None:
    """A class compiled with mypyc whose base is a C type other than ``object`` and the
    exceptions (``io.TextIOBase`` was one) compiles, and loads on Python 3.11, but fails
    to load on 3.12 and later ("has the Py_TPFLAGS_MANAGED_DICT flag but tp_dictoffset
    is set"): the whole gateway it sits in is then lost. Such a class belongs in a
    module that is not compiled."""
    compiled = set(COMPILED)
    wrong = []
    for name in COMPILED:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if not isinstance(value, type) or value.__module__ != name:
                continue
            for base in value.__mro__[1:]:
                if (
                    base is object
                    or issubclass(base, BaseException)
                    or base.__module__ in compiled
                    or base.__flags__ & _HEAPTYPE
                ):
                    continue
                wrong.append(f"{name}.{attr} derives from {base.__module__}.{base.__qualname__}")
    assert not wrong, wrong
