"""Finding the user's application: import its module, fetch the attribute, tell its kind.

``load_app`` turns an :class:`~bastion.config.schema.AppConfig` into a :class:`LoadedApp`
or raises :class:`AppLoadError` with a message a person can act on. When the failure
happens inside the user's own code (their module raises, or imports something that is
not installed), the message carries their traceback with bastion's and importlib's frames
removed, so the first frame shown is theirs.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from bastion.config.schema import AppConfig

__all__ = ["AppLoadError", "LoadedApp", "detect_interface", "load_app"]

_BASTION_DIR = str(Path(__file__).resolve().parents[1]) + os.sep
_IMPORTLIB = f"{os.sep}importlib{os.sep}"


class AppLoadError(Exception):
    """The application could not be imported, found, built or classified."""


@dataclass(frozen=True, slots=True)
class LoadedApp:
    """An imported application and the interface it speaks."""

    app: Any
    interface: Literal["asgi", "wsgi"]
    target: str


def load_app(cfg: AppConfig) -> LoadedApp:
    """Import ``cfg.target`` and return the app with its interface (ASGI or WSGI)."""
    target = cfg.target.strip()
    module_part, sep, attr_part = target.rpartition(":")
    if not sep or not module_part or not attr_part:
        raise AppLoadError(
            f'app target "{target}" must be "module:attribute" or "path/to/file.py:attribute"'
        )
    _put_first_on_path(str(Path(cfg.app_dir).resolve()))
    module = _import(module_part)
    obj = _get_attribute(module, module_part, attr_part)
    if cfg.factory:
        if not callable(obj):
            raise AppLoadError(f'app factory "{target}" is not callable')
        try:
            obj = obj()
        except Exception as exc:
            raise AppLoadError(
                f'app factory "{target}" raised {_one_line(exc)}\n\n{_user_traceback(exc)}'
            ) from None
        if inspect.iscoroutine(obj):
            obj.close()
            raise AppLoadError(
                f'app factory "{target}" is async; make it a plain function that returns the app'
            )
    if not callable(obj):
        raise AppLoadError(f'"{target}" is not callable (it is {type(obj).__name__})')
    if cfg.interface == "auto":
        interface = detect_interface(obj)
        if interface is None and not cfg.factory and _takes_no_arguments(obj):
            raise AppLoadError(
                f'"{target}" takes no arguments: if it builds the app, pass --factory'
            )
        if interface is None:
            raise AppLoadError(
                f'cannot tell whether "{target}" is ASGI or WSGI; pass --interface asgi or '
                "--interface wsgi (an ASGI app is `async def app(scope, receive, send)`, a "
                "WSGI app is `def app(environ, start_response)`)"
            )
    else:
        interface = cfg.interface
    return LoadedApp(app=obj, interface=interface, target=target)


# -- import ---------------------------------------------------------------------------


def _put_first_on_path(directory: str) -> None:
    if sys.path[:1] != [directory]:
        try:
            sys.path.remove(directory)
        except ValueError:
            pass
        sys.path.insert(0, directory)


def _import(module_part: str) -> ModuleType:
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        return _import_file(module_part)
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        if exc.name and (module_part == exc.name or module_part.startswith(exc.name + ".")):
            raise AppLoadError(f'could not import module "{module_part}": {exc}') from None
        raise AppLoadError(_failed_import(module_part, exc)) from None
    except Exception as exc:
        raise AppLoadError(_failed_import(module_part, exc)) from None


def _import_file(text: str) -> ModuleType:
    path = Path(text).resolve()
    if not path.is_file():
        raise AppLoadError(f'could not import module "{text}": no such file {str(path)!r}')
    _put_first_on_path(str(path.parent))
    name = path.stem if path.suffix == ".py" else path.name
    existing = sys.modules.get(name)
    if existing is not None:
        if _same_file(getattr(existing, "__file__", None), path):
            return existing
        name = f"_bastion_app_{name}"  # do not shadow an unrelated module of that name
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f'could not import module "{text}": not a Python source file')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if not isinstance(exc, Exception):
            raise
        raise AppLoadError(_failed_import(text, exc)) from None
    return module


def _same_file(filename: object, path: Path) -> bool:
    if not isinstance(filename, str):
        return False
    try:
        return Path(filename).resolve() == path
    except OSError:
        return False


def _failed_import(module_part: str, exc: BaseException) -> str:
    return f'could not import module "{module_part}": {_one_line(exc)}\n\n{_user_traceback(exc)}'


# -- attribute --------------------------------------------------------------------------


def _get_attribute(module: ModuleType, module_part: str, attr_part: str) -> Any:
    obj: Any = module
    for name in attr_part.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            hint = ""
            if obj is module:
                close = difflib.get_close_matches(
                    name, [n for n in dir(module) if not n.startswith("_")], n=1
                )
                if close:
                    hint = f' (did you mean "{close[0]}"?)'
            raise AppLoadError(
                f'module "{module_part}" has no attribute "{attr_part}"{hint}'
            ) from None
        except Exception as exc:  # a property or module __getattr__ that raised
            raise AppLoadError(
                f'reading "{module_part}:{attr_part}" raised {_one_line(exc)}\n\n'
                f"{_user_traceback(exc)}"
            ) from None
    return obj


# -- interface detection ----------------------------------------------------------------


def detect_interface(obj: Any) -> Literal["asgi", "wsgi"] | None:
    """Tell an ASGI 3 app from a WSGI app by its call signature; None when unsure.

    ASGI: a coroutine function (or an object whose ``__call__`` is one) taking
    ``(scope, receive, send)``, or a class whose instances are awaitable and whose
    constructor takes those three. WSGI: a plain callable taking ``(environ,
    start_response)``, or a class constructed with those two.
    """
    if inspect.isclass(obj):
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            return None
        if hasattr(obj, "__await__") and _accepts(sig, 3):
            return "asgi"
        if not hasattr(obj, "__await__") and _accepts(sig, 2):
            return "wsgi"
        return None
    func = obj if inspect.isroutine(obj) or isinstance(obj, partial) else obj.__call__
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    if inspect.iscoroutinefunction(func):
        return "asgi" if _accepts(sig, 3) else None
    if _accepts(sig, 2):
        return "wsgi"
    return None


def _takes_no_arguments(obj: Any) -> bool:
    if inspect.isclass(obj):
        return False
    try:
        return _accepts(inspect.signature(obj), 0)
    except (TypeError, ValueError):
        return False


def _accepts(sig: inspect.Signature, count: int) -> bool:
    """Whether a call with ``count`` positional arguments fits ``sig``."""
    required = 0
    maximum = 0
    for param in sig.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            maximum += 1
            if param.default is param.empty:
                required += 1
        elif param.kind == param.VAR_POSITIONAL:
            maximum = 1 << 30
        elif param.kind == param.KEYWORD_ONLY and param.default is param.empty:
            return False
    return required <= count <= maximum


# -- messages ---------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without bastion's and importlib's frames."""
    te = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    pending: list[traceback.TracebackException] = [te]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        kept = [f for f in item.stack if not _is_machinery(f.filename)]
        item.stack = traceback.StackSummary.from_list(kept)
        for nxt in (item.__cause__, item.__context__):
            if nxt is not None:
                pending.append(nxt)
    return "".join(te.format()).rstrip()


def _is_machinery(filename: str) -> bool:
    return filename.startswith(("<frozen importlib", _BASTION_DIR)) or _IMPORTLIB in filename
