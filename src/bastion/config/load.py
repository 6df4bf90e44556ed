"""Building the configuration from its sources.

Lowest to highest precedence: the defaults in :mod:`bastion.config.schema`, the TOML
file, ``BASTION_*`` environment variables, command-line flags. Each key takes the value
of the highest source that sets it; a list (``server.bind``) is replaced, not extended.

Every value is checked where it comes from, so a problem is reported against the file
line, environment variable or flag that caused it, and all problems are reported at once
in one :class:`~bastion.config.errors.ConfigError`.

``BASTION_COMPILE`` is not a setting: it is the install-time build switch of setup.py
(``BASTION_COMPILE=0`` installs pure Python), so a user may well keep it set. The loader
passes over it instead of refusing it as an unknown ``BASTION_*`` variable.

::

    config = load_config(file="bastion.toml", env=os.environ, cli={"workers.count": "4"})
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

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
from bastion.config.processes import check_process
from bastion.config.schema import Config, ProcessConfig
from bastion.config.tables import (
    APP_KEYS,
    DEFAULT_APP,
    ROUTE_KEYS,
    ROUTE_TABLE_LISTS,
    ROUTE_TABLES,
    UPSTREAM_KEYS,
    required,
    route_label,
)
from bastion.config.toml_lines import key_lines, line_of
from bastion.config.toml_write import toml_value

#: the build switch read by setup.py at install time, not a run-time setting
ENV_BUILD = "BASTION_COMPILE"


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
    cli_routes: Sequence[CliRoute] = (),
    require_app: bool = False,
) -> Config:
    """Build the configuration; raise :class:`ConfigError` listing every problem.

    ``file`` is the config file path (``None``: ``BASTION_CONFIG`` if set, else no file).
    ``cli`` maps key paths (``"workers.count"``) to values given on the command line;
    text values are read like environment variables. ``cli_flags`` names the flag behind
    each key path, for messages. ``cli_routes``: routes given on the command line
    (``--static``), put before those of the file. ``require_app``: an empty
    ``app.target`` is an error, unless routes are configured and none uses that app.
    """
    return resolve(
        file=file,
        env=env,
        cli=cli,
        cli_flags=cli_flags,
        cli_routes=cli_routes,
        require_app=require_app,
    ).config


def resolve(
    *,
    file: str | None,
    env: Mapping[str, str],
    cli: Mapping[str, object],
    cli_flags: Mapping[str, str] | None = None,
    cli_routes: Sequence[CliRoute] = (),
    require_app: bool = False,
) -> Resolved:
    """Like :func:`load_config`, also returning where each value came from."""
    builder = _Builder()
    builder.route_offset = len(cli_routes)
    path, path_source = _config_path(file, env)
    if path is not None:
        builder.add_file(path, path_source)
    builder.add_env(env)
    builder.add_cli(cli, cli_flags or {})
    builder.add_cli_routes(cli_routes)
    # Values that failed their own check were left out, so the tree builds; check it as
    # a whole too, so one run reports every problem. If the file could not be read, the
    # tree is missing its settings and checking it would only add noise.
    config = builder.build()
    if builder.file_read:
        builder.problems.extend(
            check_config(
                config, builder.sources, require_app=require_app, skip_routes=builder.bad_routes
            )
        )
    builder.raise_if_problems()
    return Resolved(config=config, file=path, sources=dict(builder.sources))


def _config_path(file: str | None, env: Mapping[str, str]) -> tuple[str | None, Source]:
    if file is not None:
        return file, Source(kind="cli", name="--config")
    from_env = env.get(ENV_CONFIG, "")
    if from_env:
        return from_env, Source(kind="env", name=ENV_CONFIG)
    return None, DEFAULT


class CliRoute(NamedTuple):
    """A route given on the command line: its table as in the file, and the flag;
    ``upstream``: the ``[upstreams.NAME]`` table it brings (``--proxy``), by name."""

    table: Mapping[str, object]
    flag: str
    upstream: tuple[str, Mapping[str, object]] | None = None


class _Builder:
    """Collects values (and problems) from each source in turn."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, object]] = {}
        self.sources: dict[str, Source] = {}
        self.problems: list[str] = []
        self.file_read = True  # False when the config file was missing or not TOML
        self.apps: dict[str, dict[str, object]] = {}
        self.upstreams: dict[str, dict[str, object]] = {}
        self.cli_routes: list[dict[str, object]] = []
        self.file_routes: list[dict[str, object]] = []
        self.processes: list[object] = []  # [[process]] tables, checked
        self.route_offset = 0  # routes from the command line come before the file's
        self.bad_routes: set[int] = set()  # routes with a problem of their own
        self.cli_route_source = Source(kind="cli")

    def set(self, key: Key, value: object, source: Source) -> None:
        self.put(key, value, source, key.path, self.values.setdefault(key.section, {}))

    def put(
        self, key: Key, value: object, source: Source, label: str, into: dict[str, object]
    ) -> bool:
        """Check ``value`` for ``key``; store it in ``into`` or record the problem."""
        value = normalize(key, value)
        bad = check_value(key, value)
        if bad is not None:
            self.problems.append(problem(source, label, bad))
            return False
        into[key.name] = value
        self.sources[label] = source
        return True

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
        def at(*keys: str | int) -> Source:
            return Source(kind="file", name=path, line=line_of(lines, keys))

        for section, body in doc.items():
            if section == "apps":
                self._add_apps(body, at)
                continue
            if section == "routes":
                self._add_routes(body, at)
                continue
            if section == "upstreams":
                self._add_upstreams(body, at)
                continue
            if section == "process":
                self._add_processes(body, at)
                continue
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
                if isinstance(value, list):
                    # a list of tables ([[tls.certificates]]): each key of each table
                    # has its own line, for the messages about it (tls.certificates[1])
                    for j, table in enumerate(value):
                        if isinstance(table, dict):
                            for sub in table:
                                label = f"{section}.{name}[{j}].{sub}"
                                self.sources[label] = at(section, name, j, sub)

    def _add_processes(self, body: object, at: _At) -> None:
        if not isinstance(body, list):
            detail = f"expected [[process]] tables, one per program, got {toml_value(body)}"
            self.problems.append(problem(at("process"), "process", detail))
            return
        names: set[str] = set()
        for i, table in enumerate(body):
            try:
                entry = msgspec.convert(table, ProcessConfig)
            except msgspec.ValidationError as exc:
                self.problems.append(problem(at("process", i), f"process[{i}]", str(exc)))
                continue
            problems = check_process(entry)
            if entry.name in names:
                problems.append(f"a second process named {entry.name!r}")
            names.add(entry.name)
            for detail in problems:
                self.problems.append(problem(at("process", i), f"process[{i}]", detail))
            self.processes.append(table)

    def _add_apps(self, body: object, at: _At) -> None:
        for name, table in self._named_tables("apps", body, at, "with the keys of [app]"):
            if name == DEFAULT_APP:
                detail = (
                    f'the app named "{DEFAULT_APP}" is the top-level [app]; '
                    "give this one another name"
                )
                self.problems.append(problem(at("apps", name), f"apps.{name}", detail))
                continue
            self.apps[name] = self._named_table_keys("apps", name, table, APP_KEYS, at)

    def _add_upstreams(self, body: object, at: _At) -> None:
        for name, table in self._named_tables("upstreams", body, at, "with servers = [...]"):
            values = self._named_table_keys("upstreams", name, table, UPSTREAM_KEYS, at)
            if "servers" not in values:
                if "servers" not in table:
                    detail = 'missing key servers (a list of "HOST:PORT", "unix:/path" or URLs)'
                    where = f"upstreams.{name}"
                    self.problems.append(problem(at("upstreams", name), where, detail))
                continue  # a bad or missing server list: the upstream is left out
            self.upstreams[name] = values

    def _named_tables(
        self, section: str, body: object, at: _At, holding: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """The ``[SECTION.NAME]`` tables of ``body``, each a table (anything else is a
        problem, named by its place)."""
        if not isinstance(body, dict):
            detail = f"expected tables [{section}.NAME] {holding}, got {toml_value(body)}"
            self.problems.append(problem(at(section), section, detail))
            return []
        tables = []
        for name, table in body.items():
            if not isinstance(table, dict):
                label = f"{section}.{name}"
                detail = f"expected a table [{label}] {holding}, got {toml_value(table)}"
                self.problems.append(problem(at(section, name), label, detail))
                continue
            tables.append((name, table))
        return tables

    def _named_table_keys(
        self, section: str, name: str, table: dict[str, Any], keys: Mapping[str, Key], at: _At
    ) -> dict[str, object]:
        """The checked values of table ``[SECTION.NAME]``, whose keys are ``keys``."""
        label = f"{section}.{name}"
        values: dict[str, object] = {}
        self.sources[label] = at(section, name)
        for key_name, value in table.items():
            key = keys.get(key_name)
            if key is None:
                hint = _unknown_in(key_name, keys, label)
                detail = f"unknown key {label}.{key_name}{hint}"
                self.problems.append(problem(at(section, name, key_name), "", detail))
                continue
            self.put(key, value, at(section, name, key_name), f"{label}.{key_name}", values)
        return values

    def _add_routes(self, body: object, at: _At) -> None:
        if isinstance(body, dict):
            detail = "expected [[routes]] tables, one per route (two brackets), got [routes]"
            self.problems.append(problem(at("routes"), "routes", detail))
            return
        if not isinstance(body, list):
            detail = f"expected [[routes]] tables, one per route, got {toml_value(body)}"
            self.problems.append(problem(at("routes"), "routes", detail))
            return
        for i, table in enumerate(body):

            def here(*names: str, i: int = i) -> Source:
                return at("routes", i, *names)

            self.file_routes.append(self._add_route(i + self.route_offset, table, here))

    def _add_route(self, index: int, table: object, at: Callable[..., Source]) -> dict[str, object]:
        """One route's table, checked key by key; problems make it a bad route."""
        before = len(self.problems)
        label = route_label(index)
        route: dict[str, object] = {}
        self.sources[label] = at()
        if not isinstance(table, dict):
            detail = f"expected a table with the keys of a route, got {toml_value(table)}"
            self.problems.append(problem(at(), label, detail))
            self.bad_routes.add(index)
            return route
        for name, value in table.items():
            if name == "proxy" and isinstance(value, str):
                value = {"upstream": value}  # proxy = "NAME"
            sub = ROUTE_TABLES.get(name)
            key = ROUTE_KEYS.get(name)
            listed = ROUTE_TABLE_LISTS.get(name)
            if key is not None:
                self.put(key, value, at(name), route_label(index, name), route)
            elif sub is not None:
                sub_values = self._add_route_table(index, name, sub, value, at)
                if sub_values is not None:
                    route[name] = sub_values
            elif listed is not None:
                tables = self._add_route_table_list(index, name, listed, value, at)
                if tables is not None:
                    route[name] = tables
            else:
                names = [*ROUTE_KEYS, *ROUTE_TABLES, *ROUTE_TABLE_LISTS]
                near = suggest(name, names)
                hint = (
                    f" (did you mean {route_label(index, near)}?)"
                    if near
                    else f" (the keys of a route are {', '.join(names)})"
                )
                detail = f"unknown key {route_label(index, name)}{hint}"
                self.problems.append(problem(at(name), "", detail))
        if len(self.problems) > before:
            self.bad_routes.add(index)
        return route

    def _add_route_table(
        self,
        index: int,
        name: str,
        keys: Mapping[str, Key],
        value: object,
        at: Callable[..., Source],
    ) -> dict[str, object] | None:
        def here(*names: str | int) -> Source:
            return at(name, *names)

        return self._add_table(route_label(index, name), keys, value, here)

    def _add_route_table_list(
        self,
        index: int,
        name: str,
        keys: Mapping[str, Key],
        value: object,
        at: Callable[..., Source],
    ) -> list[dict[str, object]] | None:
        """A route's list of tables (``[[routes.rate_limit]]``); one table is a list of
        one. Each table is named by its place: ``routes[0].rate_limit[1].burst``."""
        label = route_label(index, name)
        self.sources[label] = at(name)
        if isinstance(value, dict):
            return None if (t := self._add_table(label, keys, value, at, name)) is None else [t]
        if not isinstance(value, list):
            detail = (
                f"expected [[{label.split('[', 1)[0]}.{name}]] tables of "
                f"{', '.join(keys)}, got {toml_value(value)}"
            )
            self.problems.append(problem(at(name), label, detail))
            return None
        out: list[dict[str, object]] = []
        ok = True
        for j, table in enumerate(value):

            def here(*names: str | int, j: int = j) -> Source:
                return at(name, j, *names)

            done = self._add_table(f"{label}[{j}]", keys, table, here)
            if done is None:
                ok = False
            else:
                out.append(done)
        return out if ok else None

    def _add_table(
        self,
        label: str,
        keys: Mapping[str, Key],
        value: object,
        at: Callable[..., Source],
        *prefix: str,
    ) -> dict[str, object] | None:
        """One sub-table, key by key; ``at(*prefix, key)`` is where a key is written."""
        self.sources[label] = at(*prefix)
        if not isinstance(value, dict):
            detail = f"expected a table of {', '.join(keys)}, got {toml_value(value)}"
            self.problems.append(problem(at(*prefix), label, detail))
            return None
        out: dict[str, object] = {}
        ok = True
        for sub_name, sub_value in value.items():
            key = keys.get(sub_name)
            if key is None:
                hint = _unknown_in(sub_name, keys, label)
                detail = f"unknown key {label}.{sub_name}{hint}"
                self.problems.append(problem(at(*prefix, sub_name), "", detail))
                continue
            ok &= self.put(key, sub_value, at(*prefix, sub_name), f"{label}.{sub_name}", out)
        missing = [k for k in required(keys) if k not in value]
        if missing:
            detail = f"missing key {', '.join(missing)} ({keys[missing[0]].expected})"
            self.problems.append(problem(at(*prefix), label, detail))
            return None
        return out if ok else None

    def add_cli_routes(self, routes: Sequence[CliRoute]) -> None:
        for i, route in enumerate(routes):
            source = Source(kind="cli", name=route.flag)
            self.cli_route_source = source

            def here(*names: str, source: Source = source) -> Source:
                return source

            self.cli_routes.append(self._add_route(i, route.table, here))
            if route.upstream is not None:
                name, table = route.upstream
                self._add_upstreams({name: dict(table)}, lambda *keys, s=source: s)

    # -- the environment --------------------------------------------------------------
    def add_env(self, env: Mapping[str, str]) -> None:
        for name in sorted(env):
            if not name.startswith(ENV_PREFIX) or name in (ENV_CONFIG, ENV_BUILD):
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
        values: dict[str, object] = dict(self.values)
        if self.apps:
            values["apps"] = self.apps
        if self.upstreams:
            values["upstreams"] = self.upstreams
        routes = [*self.cli_routes, *self.file_routes]
        app_values = self.values.get("app", {})
        if self.cli_routes and not self.file_routes and app_values.get("target"):
            # --static with an app and no routes in the file: the app takes the rest
            index = len(routes)
            routes.append({"path": "/", "app": DEFAULT_APP})
            for name in ("path", "app"):
                self.sources[route_label(index, name)] = self.cli_route_source
        if routes:
            values["routes"] = routes
        if self.processes:
            values["process"] = self.processes
        try:
            return msgspec.convert(values, Config)
        except msgspec.ValidationError as e:  # pragma: no cover - every value was checked
            raise ConfigError(f"invalid configuration: {e}") from e


#: every top-level name of the file, in schema order
TOP_LEVEL = tuple(f.encode_name for f in msgspec.structs.fields(Config))


class _At(typing.Protocol):
    def __call__(self, *keys: str | int) -> Source: ...


def _unknown_in(name: str, keys: Mapping[str, Key], label: str) -> str:
    near = suggest(name, keys)
    if near is not None:
        return f" (did you mean {label}.{near}?)"
    return f" (the keys are {', '.join(keys)})"


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
    near = suggest(section, TOP_LEVEL)
    what = f"section [{section}]" if is_table else f"key {section}"
    if near is not None:
        return f"unknown {what} (did you mean [{near}]?)"
    if owners:
        return f"unknown {what} (did you mean {owners[0]}?)"
    return f"unknown {what} (the sections are {', '.join(TOP_LEVEL)})"


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
