"""Loading the user's app: targets, factories, interface detection, error messages."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion.config.schema import AppConfig
from bastion.gateway.loader import AppLoadError, LoadedApp, load_app

APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(autouse=True)
def _clean_imports() -> Iterator[None]:
    """Each test sees a fresh sys.path and forgets the modules it imported."""
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def load(target: str, **kw: object) -> LoadedApp:
    return load_app(AppConfig(target=target, app_dir=str(APPS), **kw))  # type: ignore[arg-type]


@pytest.fixture
def write_module(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(name: str, source: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.mark.parametrize(
    ("attr", "interface"),
    [
        ("asgi_function", "asgi"),
        ("asgi_instance", "asgi"),
        ("ASGIClass", "asgi"),
        ("asgi_partial", "asgi"),
        ("wsgi_function", "wsgi"),
        ("wsgi_instance", "wsgi"),
        ("WSGIClass", "wsgi"),
        ("holder.app", "asgi"),
    ],
)
def test_detects_the_interface_from_the_call_signature(attr: str, interface: str) -> None:
    loaded = load(f"gateway_kinds:{attr}")
    assert loaded.interface == interface
    assert loaded.target == f"gateway_kinds:{attr}"
    assert callable(loaded.app)


def test_dotted_attribute_resolves_to_the_nested_object() -> None:
    loaded = load("gateway_kinds:holder.app")
    assert loaded.app is sys.modules["gateway_kinds"].asgi_instance


@pytest.mark.parametrize("attr", ["three_plain", "async_two"])
def test_ambiguous_callables_ask_for_interface(attr: str) -> None:
    with pytest.raises(AppLoadError) as err:
        load(f"gateway_kinds:{attr}")
    assert str(err.value).startswith(
        f'cannot tell whether "gateway_kinds:{attr}" is ASGI or WSGI; pass --interface'
    )


def test_interface_override_is_honoured() -> None:
    assert load("gateway_kinds:three_plain", interface="asgi").interface == "asgi"
    assert load("gateway_kinds:asgi_function", interface="wsgi").interface == "wsgi"


def test_factory_is_called_without_arguments() -> None:
    loaded = load("gateway_kinds:create_wsgi", factory=True)
    assert loaded.app is sys.modules["gateway_kinds"].wsgi_function
    assert loaded.interface == "wsgi"
    assert load("gateway_kinds:create_asgi", factory=True).interface == "asgi"


def test_factory_that_raises_names_the_factory_and_shows_its_traceback() -> None:
    with pytest.raises(AppLoadError) as err:
        load("gateway_kinds:broken_factory", factory=True)
    message = str(err.value)
    assert message.startswith(
        'app factory "gateway_kinds:broken_factory" raised RuntimeError: database URL missing'
    )
    assert 'raise RuntimeError("database URL missing")' in message
    assert "bastion/gateway" not in message


def test_missing_module() -> None:
    with pytest.raises(AppLoadError) as err:
        load("no_such_module_here:app")
    assert str(err.value) == (
        "could not import module \"no_such_module_here\": No module named 'no_such_module_here'"
    )


def test_missing_submodule_of_a_package() -> None:
    with pytest.raises(AppLoadError) as err:
        load("json.no_such_sub:app")
    assert str(err.value).startswith('could not import module "json.no_such_sub": No module')
    assert "Traceback" not in str(err.value)


def test_missing_attribute_with_a_suggestion() -> None:
    with pytest.raises(AppLoadError) as err:
        load("gateway_kinds:asgi_functon")
    assert str(err.value) == (
        'module "gateway_kinds" has no attribute "asgi_functon" (did you mean "asgi_function"?)'
    )


def test_missing_nested_attribute() -> None:
    with pytest.raises(AppLoadError) as err:
        load("gateway_kinds:holder.nope")
    assert str(err.value) == 'module "gateway_kinds" has no attribute "holder.nope"'


def test_not_callable() -> None:
    with pytest.raises(AppLoadError) as err:
        load("gateway_kinds:not_callable")
    assert str(err.value).startswith('"gateway_kinds:not_callable" is not callable')


@pytest.mark.parametrize("target", ["gateway_kinds", "gateway_kinds:", ":app", ""])
def test_malformed_target(target: str) -> None:
    with pytest.raises(AppLoadError) as err:
        load(target)
    assert 'must be "module:attribute"' in str(err.value)


def test_module_importing_something_missing_shows_the_users_traceback(
    tmp_path: Path, write_module: Callable[[str, str], Path]
) -> None:
    write_module(
        "needs_missing_dep",
        """
        import os
        import not_installed_anywhere_zz

        app = None
        """,
    )
    with pytest.raises(AppLoadError) as err:
        load_app(AppConfig(target="needs_missing_dep:app", app_dir=str(tmp_path)))
    message = str(err.value)
    assert message.startswith(
        'could not import module "needs_missing_dep": ModuleNotFoundError: '
        "No module named 'not_installed_anywhere_zz'"
    )
    assert 'needs_missing_dep.py", line 3' in message
    assert "import not_installed_anywhere_zz" in message
    assert "importlib" not in message
    assert "bastion" not in message.split("\n", 1)[1]


def test_module_raising_at_import_shows_the_users_traceback(
    tmp_path: Path, write_module: Callable[[str, str], Path]
) -> None:
    write_module(
        "raises_on_import",
        """
        def configure():
            raise KeyError("SECRET_KEY")

        configure()
        """,
    )
    with pytest.raises(AppLoadError) as err:
        load_app(AppConfig(target="raises_on_import:app", app_dir=str(tmp_path)))
    message = str(err.value)
    assert message.startswith(
        "could not import module \"raises_on_import\": KeyError: 'SECRET_KEY'"
    )
    assert "in configure" in message
    assert "<frozen" not in message


def test_syntax_error_in_the_users_module(
    tmp_path: Path, write_module: Callable[[str, str], Path]
) -> None:
    write_module("bad_syntax", "def app(:\n    pass\n")
    with pytest.raises(AppLoadError) as err:
        load_app(AppConfig(target="bad_syntax:app", app_dir=str(tmp_path)))
    message = str(err.value)
    assert message.startswith('could not import module "bad_syntax": SyntaxError')
    assert "bad_syntax.py" in message and "line 1" in message


def test_file_path_target_imports_the_file_with_its_directory_on_sys_path(
    tmp_path: Path, write_module: Callable[[str, str], Path]
) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    (sub / "helper_mod_for_file_target.py").write_text("GREETING = b'hi'\n")
    (sub / "served_by_path.py").write_text(
        textwrap.dedent(
            """
            from helper_mod_for_file_target import GREETING

            def app(environ, start_response):
                start_response("200 OK", [])
                return [GREETING]
            """
        )
    )
    loaded = load_app(AppConfig(target=f"{sub / 'served_by_path.py'}:app"))
    assert loaded.interface == "wsgi"
    assert sys.path[0] == str(sub)
    assert sys.modules["served_by_path"].GREETING == b"hi"


def test_relative_file_path_target_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_module: Callable[[str, str], Path]
) -> None:
    write_module("rel_target_app", "async def app(scope, receive, send):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    assert load_app(AppConfig(target="rel_target_app.py:app")).interface == "asgi"


def test_missing_file_target(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError) as err:
        load_app(AppConfig(target=f"{tmp_path / 'nope.py'}:app"))
    assert str(err.value).startswith(f'could not import module "{tmp_path / "nope.py"}"')


def test_file_target_does_not_shadow_a_module_of_the_same_name(
    tmp_path: Path, write_module: Callable[[str, str], Path]
) -> None:
    import json

    path = write_module("json", "def app(environ, start_response):\n    return []\n")
    loaded = load_app(AppConfig(target=f"{path}:app"))
    assert loaded.interface == "wsgi"
    assert sys.modules["json"] is json


def test_app_dir_goes_first_on_sys_path_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app_dir_module_x.py").write_text(
        "def app(environ, start_response):\n    return []\n"
    )
    monkeypatch.chdir(tmp_path)
    loaded = load_app(AppConfig(target="app_dir_module_x:app", app_dir="src"))
    assert loaded.interface == "wsgi"
    assert sys.path[0] == str(tmp_path / "src")


def test_real_frameworks_are_detected() -> None:
    flask = pytest.importorskip("flask")
    starlette_apps = pytest.importorskip("starlette.applications")
    from bastion.gateway.loader import detect_interface

    assert detect_interface(flask.Flask("x")) == "wsgi"
    assert detect_interface(starlette_apps.Starlette()) == "asgi"
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler

    assert detect_interface(WSGIHandler.__call__.__get__(object.__new__(WSGIHandler))) == "wsgi"
    assert detect_interface(object.__new__(ASGIHandler)) == "asgi"


def test_async_factory_is_refused_without_a_warning() -> None:
    with pytest.raises(AppLoadError) as err:
        load("gateway_kinds:async_factory", factory=True)
    assert str(err.value).startswith('app factory "gateway_kinds:async_factory" is async')


def test_a_factory_without_factory_flag_gets_a_hint() -> None:
    with pytest.raises(AppLoadError) as err:
        load("gateway_kinds:create_wsgi")
    assert str(err.value) == (
        '"gateway_kinds:create_wsgi" takes no arguments: if it builds the app, pass --factory'
    )
