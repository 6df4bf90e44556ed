"""Building the configuration from its sources.

Lowest to highest precedence: the defaults in :mod:`bastion.config.schema`, the TOML
file, ``BASTION_*`` environment variables, command-line flags. Each key takes the value
of the highest source that sets it; a list (``server.bind``) is replaced, not extended.

Every value is checked where it comes from, so a problem is reported against the file
line, environment variable or flag that caused it, and all problems are reported at once
in one :class:`~bastion.config.errors.ConfigError`.

::

    config = load_config(file="bastion.toml", env=os.environ, cli={"workers.count": "4"})
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

import msgspec

from bastion.config.checks import check_config
from bastion.config.errors import DEFAULT, ConfigError, Source, problem
from bastion.config.keys import (
    ENV_CONFIG,
    ENV_KEYS,
    ENV_PREFIX,
    KEYS,
    SECTIONS,
    Key,
    check_value,
    from_text,
    normalize,
    suggest,
)
from bastion.config.schema import Config
from bastion.config.toml_lines import key_lines, line_of
from bastion.config.toml_write import toml_value


class Resolved(msgspec.Struct, frozen=True, kw_only=True):
    """The effective configuration and, for each key not left at its default, its source."""

    config: Config
    file: str | None
    sources: Mapping[str, Source]

    def source(self, path: str) -> Source:
        return self.sources.get(path, DEFAULT)


def load_config(
    *,
    file: str | None,
    env: Mapping[str, str],
    cli: Mapping[str, object],
    cli_flags: Mapping[str, str] | None = None,
    require_app: bool = False,
) -> Config:
    """Build the configuration; raise :class:`ConfigError` listing every problem.

    ``file`` is the config file path (``None``: ``BASTION_CONFIG`` if set, else no file).
    ``cli`` maps key paths (``"workers.count"``) to values given on the command line;
    text values are read like environment variables. ``cli_flags`` names the flag behind
    each key path, for messages. ``require_app``: an empty ``app.target`` is an error.
    """
    return resolve(file=file, env=env, cli=cli, cli_flags=cli_flags, require_app=require_app).config


def resolve(
    *,
    file: str | None,
    env: Mapping[str, str],
    cli: Mapping[str, object],
    cli_flags: Mapping[str, str] | None = None,
    require_app: bool = False,
) -> Resolved:
    """Like :func:`load_config`, also returning where each value came from."""
    builder = _Builder()
    path, path_source = _config_path(file, env)
    if path is not None:
        builder.add_file(path, path_source)
    builder.add_env(env)
    builder.add_cli(cli, cli_flags or {})
    # Values that failed their own check were left out, so the tree builds; check it as
    # a whole too, so one run reports every problem. If the file could not be read, the
    # tree is missing its settings and checking it would only add noise.
    config = builder.build()
    if builder.file_read:
        builder.problems.extend(check_config(config, builder.sources, require_app=require_app))
    builder.raise_if_problems()
    return Resolved(config=config, file=path, sources=dict(builder.sources))


def _config_path(file: str | None, env: Mapping[str, str]) -> tuple[str | None, Source]:
    if file is not None:
        return file, Source(kind="cli", name="--config")
    from_env = env.get(ENV_CONFIG, "")
    if from_env:
        return from_env, Source(kind="env", name=ENV_CONFIG)
    return None, DEFAULT


class _Builder:
    """Collects values (and problems) from each source in turn."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, object]] = {}
        self.sources: dict[str, Source] = {}
        self.problems: list[str] = []
        self.file_read = True  # False when the config file was missing or not TOML

    def set(self, key: Key, value: object, source: Source) -> None:
        value = normalize(key, value)
        bad = check_value(key, value)
        if bad is not None:
            self.problems.append(problem(source, key.path, bad))
            return
        self.values.setdefault(key.section, {})[key.name] = value
        self.sources[key.path] = source

    # -- the file ---------------------------------------------------------------------
    def add_file(self, path: str, named_by: Source) -> None:
        self.file_read = False
        where = "" if named_by.kind == "cli" else f" (named by {named_by})"
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            self.problems.append(f"{path}: config file not found{where}")
            return
        except IsADirectoryError:
            self.problems.append(f"{path}: is a directory, not a config file{where}")
            return
        except OSError as e:
            self.problems.append(f"{path}: cannot read config file: {e.strerror or e}{where}")
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            self.problems.append(f"{path}:{line}: invalid TOML: the file is not UTF-8 text")
            return
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            self.problems.append(_syntax_error(path, e))
            return
        self.file_read = True
        self._add_document(path, doc, key_lines(text))

    def _add_document(self, path: str, doc: dict[str, Any], lines: dict[Any, int]) -> None:
        def at(*keys: str) -> Source:
            return Source(kind="file", name=path, line=line_of(lines, keys))

        for section, body in doc.items():
            keys = SECTIONS.get(section)
            if keys is None:
                text = _unknown_section(section, is_table=isinstance(body, dict))
                self.problems.append(problem(at(section), "", text))
                continue
            if not isinstance(body, dict):
                detail = f"expected a table [{section}], got {toml_value(body)}"
                self.problems.append(problem(at(section), section, detail))
                continue
            for name, value in body.items():
                key = keys.get(name)
                if key is None:
                    hint = _unknown_key_hint(section, name)
                    self.problems.append(
                        problem(at(section, name), "", f"unknown key {section}.{name}{hint}")
                    )
                    continue
                self.set(key, value, at(section, name))

    # -- the environment --------------------------------------------------------------
    def add_env(self, env: Mapping[str, str]) -> None:
        for name in sorted(env):
            if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG:
                continue
            source = Source(kind="env", name=name)
            key = ENV_KEYS.get(name)
            if key is None:
                self.problems.append(problem(source, "", _unknown_env(name)))
                continue
            self.set(key, from_text(key, env[name]), source)

    # -- the command line -------------------------------------------------------------
    def add_cli(self, cli: Mapping[str, object], flags: Mapping[str, str]) -> None:
        for path, value in cli.items():
            source = Source(kind="cli", name=flags.get(path, ""))
            key = KEYS.get(path)
            if key is None:
                self.problems.append(problem(source, "", f"unknown key {path}"))
                continue
            if isinstance(value, str):
                value = from_text(key, value)
            elif isinstance(value, list | tuple) and isinstance(
                key.info, msgspec.inspect.VarTupleType
            ):
                value = list(value)
            self.set(key, value, source)

    # -- the result -------------------------------------------------------------------
    def raise_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def build(self) -> Config:
        try:
            return msgspec.convert(self.values, Config)
        except msgspec.ValidationError as e:  # pragma: no cover - every value was checked
            raise ConfigError(f"invalid configuration: {e}") from e


def _syntax_error(path: str, e: tomllib.TOMLDecodeError) -> str:
    # tomllib ends its messages with "(at line L, column C)" or "(at end of document)".
    msg = str(e)
    where = ""
    if msg.endswith(")") and " (at " in msg:
        msg, _, tail = msg.rpartition(" (at ")
        tail = tail[:-1]
        if tail.startswith("line "):
            line, _, column = tail.removeprefix("line ").partition(", column ")
            where = f":{line}:{column}" if column else f":{line}"
        elif tail == "end of document":
            msg += " at the end of the file"
    return f"{path}{where}: invalid TOML: {msg}"


def _unknown_section(section: str, *, is_table: bool) -> str:
    owners = [k.path for k in KEYS.values() if k.name == section]
    if owners and not is_table:
        return f"unknown key {section} (did you mean {owners[0]}?)"
    near = suggest(section, SECTIONS)
    what = f"section [{section}]" if is_table else f"key {section}"
    if near is not None:
        return f"unknown {what} (did you mean [{near}]?)"
    if owners:
        return f"unknown {what} (did you mean {owners[0]}?)"
    return f"unknown {what} (the sections are {', '.join(SECTIONS)})"


def _unknown_key_hint(section: str, name: str) -> str:
    near = suggest(name, SECTIONS[section])
    if near is not None:
        return f" (did you mean {section}.{near}?)"
    elsewhere = [k.path for k in KEYS.values() if k.name == name]
    if elsewhere:
        return f" (did you mean {elsewhere[0]}?)"
    return f" (the keys of [{section}] are {', '.join(SECTIONS[section])})"


def _unknown_env(name: str) -> str:
    # compare without the common prefix, or every name looks close to every other
    near = suggest(name.removeprefix(ENV_PREFIX), [k.removeprefix(ENV_PREFIX) for k in ENV_KEYS])
    if near is not None:
        return f"unknown setting (did you mean {ENV_PREFIX}{near}?)"
    return (
        f"unknown setting (bastion reads {ENV_PREFIX}<SECTION>__<KEY>, "
        f"like {ENV_PREFIX}WORKERS__COUNT, and {ENV_CONFIG})"
    )
