"""Configuration sources and their precedence: defaults < file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.errors import ConfigError
from bastion.config.load import load_config, resolve
from bastion.config.schema import Config


def write(tmp_path: Path, text: str, name: str = "bastion.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_any_source() -> None:
    assert load_config(file=None, env={}, cli={}) == Config()


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[app]\ntarget = "pkg.mod:app"\n[workers]\ncount = 3\ntimeout = 10\n'
        '[server]\nbind = ["127.0.0.1:9000", "unix:/tmp/b.sock"]\n',
    )
    config = load_config(file=path, env={}, cli={})
    assert config.app.target == "pkg.mod:app"
    assert config.workers.count == 3
    assert config.workers.timeout == 10.0
    assert config.server.bind == ("127.0.0.1:9000", "unix:/tmp/b.sock")
    assert config.limits == Config().limits  # untouched sections keep their defaults


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\ncount = 3\npreload = false\n")
    env = {"BASTION_WORKERS__COUNT": "5", "BASTION_WORKERS__PRELOAD": "true"}
    config = load_config(file=path, env=env, cli={})
    assert config.workers.count == 5
    assert config.workers.preload is True


def test_flags_override_environment_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\ncount = 3\n[server]\nbind = ['127.0.0.1:1']\n")
    env = {"BASTION_WORKERS__COUNT": "5", "BASTION_SERVER__BIND": "127.0.0.1:2"}
    config = load_config(
        file=path, env=env, cli={"workers.count": "7", "server.bind": ["127.0.0.1:3"]}
    )
    assert config.workers.count == 7
    assert config.server.bind == ("127.0.0.1:3",)  # a list is replaced, not extended


def test_each_source_only_overrides_what_it_sets(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\ncount = 3\nmax_requests = 10\n")
    r = resolve(
        file=path,
        env={"BASTION_WORKERS__MAX_REQUESTS": "20"},
        cli={"workers.timeout": "9"},
        cli_flags={"workers.timeout": "--timeout"},
    )
    w = r.config.workers
    assert (w.count, w.max_requests, w.timeout, w.graceful_timeout) == (3, 20, 9.0, 30.0)
    assert str(r.source("workers.count")) == f"{path}:2"
    env_source = "environment variable BASTION_WORKERS__MAX_REQUESTS"
    assert str(r.source("workers.max_requests")) == env_source
    assert str(r.source("workers.timeout")) == "command line --timeout"
    assert r.source("workers.graceful_timeout").kind == "default"


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\ncount = 2\n")
    config = load_config(file=None, env={"BASTION_CONFIG": path}, cli={})
    assert config.workers.count == 2


def test_config_flag_beats_config_environment_variable(tmp_path: Path) -> None:
    a = write(tmp_path, "[workers]\ncount = 2\n", "a.toml")
    b = write(tmp_path, "[workers]\ncount = 4\n", "b.toml")
    assert load_config(file=b, env={"BASTION_CONFIG": a}, cli={}).workers.count == 4


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_the_build_switch_is_not_a_setting(tmp_path: Path, value: str) -> None:
    # BASTION_COMPILE=0 is how the README installs pure Python; a user who keeps it set
    # must still be able to run bastion, and it changes no setting
    env = {"BASTION_COMPILE": value, "BASTION_WORKERS__COUNT": "3"}
    r = resolve(file=None, env=env, cli={})
    assert r.config.workers.count == 3
    assert {str(s) for s in r.sources.values()} == {"environment variable BASTION_WORKERS__COUNT"}


def test_a_near_miss_of_the_build_switch_is_still_refused() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(file=None, env={"BASTION_COMPILED": "0"}, cli={})
    assert err.value.problems[0].startswith(
        "environment variable BASTION_COMPILED: unknown setting"
    )


@pytest.mark.parametrize(
    ("name", "text", "path", "expected"),
    [
        ("BASTION_WORKERS__COUNT", "4", "workers.count", 4),
        ("BASTION_WORKERS__TIMEOUT", "2.5", "workers.timeout", 2.5),
        ("BASTION_WORKERS__TIMEOUT", "3", "workers.timeout", 3.0),
        ("BASTION_WORKERS__PRELOAD", "yes", "workers.preload", True),
        ("BASTION_WORKERS__PRELOAD", "0", "workers.preload", False),
        ("BASTION_SERVER__REUSE_PORT", "TRUE", "server.reuse_port", True),
        (
            "BASTION_SERVER__BIND",
            '["127.0.0.1:9000", "[::1]:9000"]',
            "server.bind",
            ("127.0.0.1:9000", "[::1]:9000"),
        ),
        ("BASTION_SERVER__BIND", "unix:/run/app.sock", "server.bind", ("unix:/run/app.sock",)),
        ("BASTION_SERVER__UNIX_SOCKET_MODE", "600", "server.unix_socket_mode", 0o600),
        ("BASTION_SERVER__UNIX_SOCKET_MODE", "0o640", "server.unix_socket_mode", 0o640),
        ("BASTION_SERVER__SERVER_HEADER", "123", "server.server_header", "123"),
        ("BASTION_SERVER__SERVER_HEADER", "", "server.server_header", ""),
        ("BASTION_LIMITS__MAX_BODY_SIZE", "10m", "limits.max_body_size", 10 * 1024 * 1024),
        ("BASTION_LIMITS__MAX_BODY_SIZE", "1_000", "limits.max_body_size", 1000),
        ("BASTION_APP__INTERFACE", "wsgi", "app.interface", "wsgi"),
        ("BASTION_LOG__ACCESS", "json", "log.access", "json"),
    ],
)
def test_environment_values_are_read_for_their_type(
    name: str, text: str, path: str, expected: object
) -> None:
    config = load_config(file=None, env={name: text}, cli={})
    section, key = path.split(".")
    assert getattr(getattr(config, section), key) == expected


def test_unrelated_environment_is_ignored() -> None:
    env = {"PATH": "/bin", "BASTIONX": "1", "MY_BASTION_THING": "2"}
    assert load_config(file=None, env=env, cli={}) == Config()


def test_file_shorthands(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nbind = "0.0.0.0:80"\nunix_socket_mode = 0o600\n[limits]\nmax_body_size = "2k"\n',
    )
    config = load_config(file=path, env={}, cli={})
    assert config.server.bind == ("0.0.0.0:80",)
    assert config.server.unix_socket_mode == 0o600
    assert config.limits.max_body_size == 2048


def test_require_app() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(file=None, env={}, cli={}, require_app=True)
    assert err.value.problems == (
        "no app given: pass MODULE:ATTR or set [app] target in the config file",
    )
    config = load_config(file=None, env={}, cli={"app.target": "main:app"}, require_app=True)
    assert config.app.target == "main:app"


@pytest.mark.parametrize(
    "target", ["main:app", "pkg.sub.mod:app", "pkg:module.attr", "src/app.py:app", "app.py:make"]
)
def test_accepted_targets(target: str) -> None:
    assert load_config(file=None, env={}, cli={"app.target": target}).app.target == target


def test_config_is_frozen() -> None:
    config = load_config(file=None, env={}, cli={})
    with pytest.raises(AttributeError):
        config.workers.count = 3  # type: ignore[misc]
