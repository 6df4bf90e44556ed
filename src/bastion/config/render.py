"""The effective configuration as a TOML document, for ``bastion check``.

Every key is written, defaults included, grouped by section in schema order. A value
that does not come from the defaults says where it came from in a trailing comment::

    [workers]
    count = 4  # environment variable BASTION_WORKERS__COUNT

Then each ``[apps.NAME]`` table with every key of an app, and each route as a
``[[routes]]`` table with its plain keys and its handler's table in full; a route's
``compress`` and ``headers`` tables are written only when the route sets them (otherwise
it uses the top-level ones); its ``[[routes.rate_limit]]`` tables follow. Routes given
on the command line (``--static``) are written too, marked with their flag. Last, each
``[[process]]`` table (managed processes) with every key.

The output is itself a valid config file that reproduces the same configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from bastion.config.errors import Source
from bastion.config.keys import MODE_KEYS, SECTIONS, Key
from bastion.config.schema import Config
from bastion.config.tables import (
    APP_KEYS,
    ROUTE_KEYS,
    ROUTE_TABLE_LISTS,
    ROUTE_TABLES,
    UPSTREAM_KEYS,
    route_label,
)
from bastion.config.toml_write import toml_string, toml_value


def render_config(config: Config, sources: Mapping[str, Source] | None = None) -> str:
    """``config`` as TOML text; ``sources`` adds a "where from" comment to each value."""
    sources = sources or {}
    blocks = []
    for section, keys in SECTIONS.items():
        body = getattr(config, section)
        blocks.append(_table(f"[{section}]", body, keys, section, sources))
    for name, app in config.apps.items():
        label = f"apps.{name}"
        header = f"[apps.{_key(name)}]"
        blocks.append(_table(header, app, APP_KEYS, label, sources))
    for name, upstream in config.upstreams.items():
        label = f"upstreams.{name}"
        header = f"[upstreams.{_key(name)}]"
        blocks.append(_table(header, upstream, UPSTREAM_KEYS, label, sources))
    for i, route in enumerate(config.routes):
        label = route_label(i)
        parts = [_table("[[routes]]", route, ROUTE_KEYS, label, sources)]
        for name, keys in ROUTE_TABLES.items():
            sub = route.respond if name == "return" else getattr(route, name)
            if sub is not None:
                parts.append(_table(f"[routes.{name}]", sub, keys, f"{label}.{name}", sources))
        for name, keys in ROUTE_TABLE_LISTS.items():
            for j, item in enumerate(getattr(route, name)):
                where = f"{label}.{name}[{j}]"
                parts.append(_table(f"[[routes.{name}]]", item, keys, where, sources))
        blocks.append("\n".join(parts))
    for process in config.process:
        lines = ["[[process]]"]
        for f in msgspec.structs.fields(process):
            lines.append(f"{f.encode_name} = {toml_value(getattr(process, f.name))}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _table(
    header: str,
    body: msgspec.Struct,
    keys: Mapping[str, Key],
    label: str,
    sources: Mapping[str, Source],
) -> str:
    lines = [header]
    fields = {f.encode_name: f.name for f in msgspec.structs.fields(body)}
    for name, key in keys.items():
        value = getattr(body, fields[name])
        text = f"0o{value:03o}" if key.path in MODE_KEYS else toml_value(value)
        line = f"{name} = {text}"
        source = sources.get(f"{label}.{name}")
        if source is not None and source.kind != "default":
            line += f"  # {source}"
        lines.append(line)
    return "\n".join(lines)


def _key(name: str) -> str:
    if name and name.isascii() and all(c.isalnum() or c in "_-" for c in name):
        return name
    return toml_string(name)
