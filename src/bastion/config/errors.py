"""Configuration errors, and where each configuration value came from.

A :class:`ConfigError` carries one or more problems. Each problem is a line a person can
act on: the place the value came from (``bastion.toml:12``, ``environment variable
BASTION_WORKERS__COUNT``, ``command line --workers``), the key path, what was expected
and what was given::

    bastion.toml:12: limits.max_header_count: expected an integer >= 1, got "abc"

Loading collects every problem it finds instead of stopping at the first, so one run of
``bastion check`` shows them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

SourceKind = Literal["default", "file", "env", "cli"]

#: The exit status of ``bastion`` for a configuration error (like a usage error).
CONFIG_ERROR_EXIT = 2


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """Where one configuration value came from."""

    kind: SourceKind
    name: str = ""  # file path, environment variable or command-line flag
    line: int = 0  # line in the file; 0 when unknown

    def __str__(self) -> str:
        if self.kind == "file":
            return f"{self.name}:{self.line}" if self.line else self.name
        if self.kind == "env":
            return f"environment variable {self.name}"
        if self.kind == "cli":
            return f"command line {self.name}" if self.name else "command line"
        return "default"


DEFAULT = Source(kind="default")


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` holds one message per problem."""

    exit_code = CONFIG_ERROR_EXIT

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        if not self.problems:
            raise ValueError("a ConfigError needs at least one problem")
        super().__init__("\n".join(self.problems))


def problem(source: Source | None, key: str, detail: str) -> str:
    """Format one problem: ``<source>: <key>: <detail>``, leaving out empty parts."""
    parts = [str(source)] if source is not None and source.kind != "default" else []
    if key:
        parts.append(key)
    parts.append(detail)
    return ": ".join(parts)
