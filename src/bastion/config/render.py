"""The effective configuration as a TOML document, for ``bastion check``.

Every key is written, defaults included, grouped by section in schema order. A value
that does not come from the defaults says where it came from in a trailing comment::

    [workers]
    count = 4  # environment variable BASTION_WORKERS__COUNT

The output is itself a valid config file that reproduces the same configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

from bastion.config.errors import Source
from bastion.config.keys import MODE_KEYS, SECTIONS
from bastion.config.schema import Config
from bastion.config.toml_write import toml_value


def render_config(config: Config, sources: Mapping[str, Source] | None = None) -> str:
    """``config`` as TOML text; ``sources`` adds a "where from" comment to each value."""
    sources = sources or {}
    blocks = []
    for section, keys in SECTIONS.items():
        body = getattr(config, section)
        lines = [f"[{section}]"]
        for name, key in keys.items():
            value = getattr(body, name)
            text = f"0o{value:03o}" if key.path in MODE_KEYS else toml_value(value)
            line = f"{name} = {text}"
            source = sources.get(key.path)
            if source is not None and source.kind != "default":
                line += f"  # {source}"
            lines.append(line)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
