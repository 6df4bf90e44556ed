"""``bastion check`` output: every key as TOML, readable back into the same config."""

from __future__ import annotations

import tomllib
from pathlib import Path

from bastion.config.keys import KEYS
from bastion.config.load import load_config, resolve
from bastion.config.render import render_config
from bastion.config.schema import Config
from bastion.config.toml_write import toml_value


def test_every_key_is_rendered() -> None:
    doc = tomllib.loads(render_config(Config()))
    rendered = {f"{section}.{key}" for section, body in doc.items() for key in body}
    assert rendered == set(KEYS)


def test_rendered_config_reads_back_the_same(tmp_path: Path) -> None:
    r = resolve(
        file=None,
        env={"BASTION_SERVER__UNIX_SOCKET_MODE": "600", "BASTION_LOG__ACCESS": "json"},
        cli={
            "app.target": "pkg.mod:app",
            "server.bind": ["127.0.0.1:9000", "unix:/tmp/x.sock"],
            "server.server_header": 'odd "quoted"\\ value',
            "workers.timeout": "12.5",
        },
    )
    text = render_config(r.config, r.sources)
    path = tmp_path / "effective.toml"
    path.write_text(text)
    assert load_config(file=str(path), env={}, cli={}) == r.config
    mode_line = "unix_socket_mode = 0o600  # environment variable BASTION_SERVER__UNIX_SOCKET_MODE"
    assert mode_line in text
    assert "timeout = 12.5  # command line\n" in text  # no flag name was given


def test_toml_values() -> None:
    assert toml_value(True) == "true"
    assert toml_value(3) == "3"
    assert toml_value(2.0) == "2.0"
    assert toml_value("a\tb\x01\x7f") == '"a\\tb\\u0001\\u007f"'
    assert toml_value(("a", 1)) == '["a", 1]'
    assert toml_value({"k": 1, "odd key": "v"}) == '{ k = 1, "odd key" = "v" }'
    s = 'quote " backslash \\ newline \n é'
    assert tomllib.loads(f"v = {toml_value(s)}")["v"] == s


def test_process_tables_are_rendered_and_read_back(tmp_path: Path) -> None:
    source = tmp_path / "bastion.toml"
    celery = tmp_path / "celery"  # (a program the checks find: the config names it)
    celery.write_text("#!/bin/sh\n")
    celery.chmod(0o755)
    source.write_text(
        '[app]\ntarget = "main:app"\n'
        f'[[process]]\nname = "celery"\ncommand = ["{celery}", "-A", "proj", "worker"]\n'
        'env = { BROKER = "redis://127.0.0.1" }\nstop_signal = "SIGINT"\n'
        f'[[process]]\nname = "beat"\ncommand = "{celery} -A proj beat"\nrestart = "on-failure"\n'
    )
    config = load_config(file=str(source), env={}, cli={})
    assert [p.name for p in config.process] == ["celery", "beat"]
    text = render_config(config)
    assert text.count("[[process]]") == 2
    again = tmp_path / "effective.toml"
    again.write_text(text)
    assert load_config(file=str(again), env={}, cli={}) == config
