"""docs/configuration.md describes every configuration key, truthfully.

For each key of the schema, the reference must have a ``### `section.key` `` entry that
states its default, its environment variable and every command-line flag that sets it,
and the complete example at the end must be a valid configuration.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from bastion.cli import OPTIONS
from bastion.config.keys import KEYS, MODE_KEYS
from bastion.config.load import load_config
from bastion.config.tables import ROUTE_REFERENCE, ROUTE_TABLES
from bastion.config.toml_write import toml_value

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def entries() -> dict[str, str]:
    text = DOC.read_text()
    parts = re.split(r"^### `([a-z0-9_]+\.[a-z0-9_]+)`\n", text, flags=re.MULTILINE)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = re.split(r"^#{1,3} ", body, maxsplit=1, flags=re.MULTILINE)[0]
    return found


def test_every_key_has_an_entry_and_nothing_else_does() -> None:
    documented = entries()
    missing = sorted(set(KEYS) - set(documented))
    assert not missing, f"docs/configuration.md does not describe {missing}"
    extra = sorted(set(documented) - set(KEYS) - set(route_entries()))
    assert not extra, f"docs/configuration.md describes keys that do not exist: {extra}"


@pytest.mark.parametrize("path", sorted(KEYS))
def test_entry_states_default_environment_and_flags(path: str) -> None:
    body = entries().get(path)
    assert body is not None, f"no entry for {path}"
    key = KEYS[path]
    default = f"0o{key.default:03o}" if path in MODE_KEYS else toml_value(key.default)
    assert f"- Default: `{default}`" in body, f"{path}: default {default} not stated"
    assert f"- Environment: `{key.env}`" in body, f"{path}: {key.env} not stated"
    flags = [f for opt in OPTIONS if opt.key == path for f in opt.flags]
    line = next((ln for ln in body.splitlines() if ln.startswith("- Command line:")), "")
    assert line, f"{path}: no command-line line"
    for flag in flags:
        assert f"`{flag}" in line, f"{path}: flag {flag} not stated"
    if not flags and path != "app.target":
        assert line == "- Command line: none", f"{path}: documents a flag that does not exist"
    assert len(body.split()) > 30, f"{path}: say what it does and where the default comes from"


def test_complete_example_is_a_valid_configuration(tmp_path: Path) -> None:
    text = DOC.read_text()
    example = text.split("## A complete example", 1)[1]
    toml = re.search(r"```toml\n(.*?)```", example, re.DOTALL)
    assert toml is not None
    doc = tomllib.loads(toml.group(1))
    assert {f"{s}.{k}" for s, body in doc.items() for k in body} == set(KEYS)
    path = tmp_path / "example.toml"
    path.write_text(toml.group(1))
    # the example's unix socket directory need not exist for the configuration to be valid
    config = load_config(file=str(path), env={}, cli={})
    assert config.limits.max_body_size == 10 * 1024 * 1024


def route_entries() -> dict[str, str]:
    text = DOC.read_text()
    parts = re.split(r"^### `(routes(?:\.[a-z_]+)+|apps\.<name>)`\n", text, flags=re.MULTILINE)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = re.split(r"^#{1,3} ", body, maxsplit=1, flags=re.MULTILINE)[0]
    return found


@pytest.mark.parametrize("path", sorted(ROUTE_REFERENCE))
def test_route_key_entries(path: str) -> None:
    documented = route_entries()
    if path.startswith(("routes.compress.", "routes.headers.")):
        table = path.rsplit(".", 1)[0]
        assert table in documented, f"no entry for {table}"
        return
    body = documented.get(path)
    assert body is not None, f"no entry for {path}"
    key = ROUTE_REFERENCE[path]
    if key.default is msgspec.NODEFAULT:
        assert "- Default: none: required" in body, f"{path}: say that it is required"
    else:
        default = toml_value(key.default)
        assert f"- Default: `{default}`" in body, f"{path}: default {default} not stated"
    assert "- Environment: none" in body
    assert len(body.split()) > 30, f"{path}: say what it does and where the default comes from"


def test_route_tables_and_apps_have_entries() -> None:
    documented = route_entries()
    for name in ("apps.<name>", *(f"routes.{t}" for t in ROUTE_TABLES)):
        assert name in documented, f"no entry for {name}"


def test_routing_guide_example_is_valid(tmp_path: Path) -> None:
    text = (DOC.parent / "routing.md").read_text()
    example = text.split("## A complete example", 1)[1]
    toml = re.search(r"```toml\n(.*?)```", example, re.DOTALL)
    assert toml is not None
    for d in ("staticfiles", "media"):
        (tmp_path / d).mkdir()
    (tmp_path / "bastion.toml").write_text(toml.group(1))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        config = load_config(file="bastion.toml", env={}, cli={}, require_app=True)
    assert config.routes[0].path == "/static/"
    assert config.routes[4].redirect is not None
