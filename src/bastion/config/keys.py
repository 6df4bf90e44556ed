"""Every configuration key, derived from the schema: its path, type, default and names.

The loader, the ``bastion check`` renderer and the configuration reference test all walk
:data:`SECTIONS`, so a field added to :mod:`bastion.config.schema` is picked up
everywhere without another list to keep in step.

This module also holds the two value rules shared by every source:

* :func:`from_text` turns an environment variable's or a command-line flag's text into a
  value of the key's type (``"4"`` -> ``4``, ``"true"`` -> ``True``, ``"660"`` for a
  file mode -> ``0o660``, ``"10m"`` for a size -> ``10485760``).
* :func:`check_value` says, in words, why a value does not fit its key.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Any

import msgspec
import msgspec.inspect as mi

from bastion.config.schema import Config
from bastion.config.toml_write import toml_value

ENV_PREFIX = "BASTION_"
ENV_CONFIG = "BASTION_CONFIG"  # path of the config file

# Keys measured in bytes accept a k/m/g suffix (1024-based, like nginx's "1m").
SIZE_KEYS = frozenset(
    {
        "limits.max_body_size",
        "limits.max_header_size",
        "limits.max_pending_output",
        "limits.max_request_line",
        "routes.proxy.buffer_request",
        "websocket.max_message_size",
        "workers.max_memory",
    }
)
# File modes: bare digits from the environment or the command line are octal, like chmod.
MODE_KEYS = frozenset({"server.unix_socket_mode"})

_SIZE_RE = re.compile(r"\s*(\d[\d_]*)\s*([kmg])(?:i?b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}
_OCTAL_RE = re.compile(r"0?[0-7]{1,3}")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class Key(msgspec.Struct, frozen=True, kw_only=True):
    """One configuration key, such as ``workers.count``."""

    section: str
    name: str
    annotation: Any  # the field's Python type, for msgspec.convert
    info: mi.Type  # the same type as msgspec describes it, with its constraints
    default: Any

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}__{self.name.upper()}"

    @property
    def expected(self) -> str:
        """What the key accepts, in words: ``an integer >= 1``."""
        if self.path in MODE_KEYS:
            return "a file mode from 0o000 to 0o777 (write it in octal, like 0o660)"
        text = describe(self.info, self.annotation)
        if self.path in SIZE_KEYS:
            text += ' (a number of bytes, or with a k/m/g suffix like "10m")'
        return text


def table_keys(cls: type[msgspec.Struct], section: str) -> dict[str, Key]:
    """The keys of one table type, by their TOML names; ``section`` prefixes their paths."""
    infos = {f.encode_name: f.type for f in typing.cast(mi.StructType, mi.type_info(cls)).fields}
    keys: dict[str, Key] = {}
    for f in msgspec.structs.fields(cls):
        if f.default is not msgspec.NODEFAULT:
            default = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        else:
            default = msgspec.NODEFAULT  # required: static.root, redirect.to
        keys[f.encode_name] = Key(
            section=section,
            name=f.encode_name,
            annotation=f.type,
            info=infos[f.encode_name],
            default=default,
        )
    return keys


def _walk() -> dict[str, dict[str, Key]]:
    return {
        sec.name: table_keys(sec.type, sec.name)
        for sec in msgspec.structs.fields(Config)
        if isinstance(sec.type, type) and issubclass(sec.type, msgspec.Struct)
    }


#: section name -> key name -> Key, in schema order: the plain sections ([server],
#: [compress], ...), whose keys can also be set from the environment and the command line.
#: ``apps`` and ``routes`` are read from the config file only (see :mod:`.tables`).
SECTIONS: Mapping[str, Mapping[str, Key]] = _walk()
#: "section.name" -> Key
KEYS: Mapping[str, Key] = {k.path: k for keys in SECTIONS.values() for k in keys.values()}
#: "BASTION_SECTION__NAME" -> Key
ENV_KEYS: Mapping[str, Key] = {k.env: k for k in KEYS.values()}


def describe(info: mi.Type, annotation: Any = None) -> str:
    """Describe a type and its constraints in words."""
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, mi.IntType | mi.FloatType):
        noun = "an integer" if isinstance(info, mi.IntType) else "a number"
        low = (
            f">= {info.ge}"
            if info.ge is not None
            else f"> {info.gt}"
            if info.gt is not None
            else ""
        )
        high = (
            f"<= {info.le}"
            if info.le is not None
            else f"< {info.lt}"
            if info.lt is not None
            else ""
        )
        if info.ge is not None and info.le is not None:
            return f"{noun} from {info.ge} to {info.le}"
        return " ".join(p for p in (noun, low, high) if p)
    if isinstance(info, mi.LiteralType):
        values = typing.get_args(annotation) if annotation is not None else info.values
        return "one of " + ", ".join(toml_value(v) for v in values)
    if isinstance(info, mi.StrType):
        return "a string"
    if isinstance(info, mi.VarTupleType | mi.ListType):
        args = typing.get_args(annotation) if annotation is not None else ()
        item = describe(info.item_type, args[0] if args else None)
        if item.startswith("one of "):
            return f"a list of values, each {item}"
        return f"a list of {_plural(item)}"
    if isinstance(info, mi.StructType):
        names = ", ".join(f.encode_name for f in info.fields)
        return f"a table of {names}"
    if isinstance(info, mi.DictType):
        return f"a table of {_plural(describe(info.value_type))}"
    return str(info)  # pragma: no cover - every schema type is handled above


def _plural(text: str) -> str:
    for one, many in (("a string", "strings"), ("an integer", "integers"), ("a number", "numbers")):
        if text.startswith(one):
            return many + text[len(one) :]
    return text


def normalize(key: Key, value: object) -> object:
    """Accept the obvious shorthands in every source: a lone string for a list key, and a
    size with a unit (``"10m"``) for a byte-count key."""
    if isinstance(key.info, mi.VarTupleType) and isinstance(value, str):
        return [value]
    if key.path in SIZE_KEYS and isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        if m:
            return int(m.group(1).replace("_", "")) * _SIZE_UNITS[m.group(2).lower()]
    return value


def from_text(key: Key, text: str) -> object:
    """Turn the text of an environment variable or a flag into a value for ``key``.

    Strings stay strings; other types are read as a TOML value (``4``, ``2.5``, ``true``,
    ``["a", "b"]``). Text that does not read as one is kept as a string, so the type
    check that follows reports it as given.
    """
    info = key.info
    if isinstance(info, mi.StrType | mi.LiteralType):
        return text
    stripped = text.strip()
    if isinstance(info, mi.BoolType):
        low = stripped.lower()
        return True if low in _TRUE else False if low in _FALSE else text
    if isinstance(info, mi.VarTupleType):
        if stripped.startswith("["):
            return _toml_value(stripped, text)
        return [text]
    if key.path in MODE_KEYS and _OCTAL_RE.fullmatch(stripped):
        return int(stripped, 8)
    if key.path in SIZE_KEYS and _SIZE_RE.fullmatch(stripped):
        return normalize(key, stripped)
    return _toml_value(stripped, text)


def _toml_value(text: str, fallback: str) -> object:
    if "\n" in text or "\r" in text:
        return fallback
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return fallback
    return doc["v"] if list(doc) == ["v"] else fallback


def check_value(key: Key, value: object) -> str | None:
    """``None`` if ``value`` fits ``key``, else ``expected ..., got ...``."""
    try:
        converted = msgspec.convert(value, key.annotation)
    except msgspec.ValidationError:
        pass
    else:
        if not (isinstance(converted, float) and not math.isfinite(converted)):
            return None
    return f"expected {key.expected}, got {toml_value(value)}"


def suggest(word: str, choices: typing.Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``word``, if any is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None
