"""[upstreams.NAME] and the proxy route: each mistake named with its file line and key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bastion.cli import build_parser, load
from bastion.config.errors import ConfigError
from bastion.config.load import load_config
from bastion.config.render import render_config


def problems(tmp_path: Path, text: str) -> tuple[str, ...]:
    (tmp_path / "bastion.toml").write_text(text)
    with pytest.raises(ConfigError) as err, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        load_config(file="bastion.toml", env={}, cli={}, require_app=True)
    return err.value.problems


UP = '[upstreams.api]\nservers = ["10.0.0.5:8000", "unix:/run/a.sock backup"]\n\n'


def test_short_and_long_forms_and_no_app_needed(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(
        UP + '[[routes]]\npath = "/api/"\nproxy = "api"\n\n'
        '[[routes]]\npath = "/v2/"\nproxy = { upstream = "api", strip_prefix = true }\n'
    )
    config = load_config(file=str(tmp_path / "bastion.toml"), env={}, cli={}, require_app=True)
    first, second = config.routes
    assert first.proxy is not None and first.proxy.upstream == "api"
    assert second.proxy is not None and second.proxy.strip_prefix
    assert config.upstreams["api"].balance == "peak_ewma"
    text = render_config(config)
    assert "[upstreams.api]" in text and "[routes.proxy]" in text
    (tmp_path / "again.toml").write_text(text)
    assert load_config(file=str(tmp_path / "again.toml"), env={}, cli={}) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[upstreams.api]\nservers = ["10.0.0.5"]\n',
            'bastion.toml:2: upstreams.api.servers: expected "HOST:PORT"',
        ),
        (
            '[upstreams.api]\nbalance = "random"\n',
            "bastion.toml:2: upstreams.api.balance: expected one of",
        ),
        ("[upstreams.api]\nretries = 2\n", "bastion.toml:1: upstreams.api: missing key servers"),
        (
            '[upstreams.api]\nservers = ["h:1"]\nhash_on = "ip"\n',
            'bastion.toml:3: upstreams.api.hash_on: expected "client", "path", "header:NAME"',
        ),
        (
            '[upstreams.api]\nservers = ["h:1"]\nhash_on = "header:"\n',
            "bastion.toml:3: upstreams.api.hash_on: expected",
        ),
        (
            '[upstreams.api]\nservers = ["h:1"]\nsticky_cookie = "a b"\n',
            "bastion.toml:3: upstreams.api.sticky_cookie: expected a cookie name",
        ),
        (
            '[upstreams.api]\nservers = ["h:1"]\nhealth_path = "health"\n',
            'bastion.toml:3: upstreams.api.health_path: expected a path such as "/health"',
        ),
        (
            '[upstreams.api]\nservers = ["h:1"]\nhealth_jitter = 2\n',
            "bastion.toml:3: upstreams.api.health_jitter",
        ),
        (
            '[upstreams.api]\nservers = ["h:1"]\nconect_timeout = 3\n',
            "bastion.toml:3: unknown key upstreams.api.conect_timeout (did you mean",
        ),
        (
            '[upstreams.api]\nservers = ["h:1 backup"]\n',
            "bastion.toml:2: upstreams.api.servers: expected at least one server that is not",
        ),
        ("upstreams = 3\n", "bastion.toml:1: upstreams: expected tables [upstreams.NAME]"),
        (
            UP + '[[routes]]\npath = "/"\nproxy = "apj"\n',
            'bastion.toml:6: routes[0].proxy.upstream: no upstream named "apj"',
        ),
        (
            UP + '[[routes]]\npath = "/"\nmatch = "exact"\n'
            'proxy = { upstream = "api", strip_prefix = true }\n',
            "bastion.toml:7: routes[0].proxy.strip_prefix: needs a prefix route",
        ),
        (
            UP + '[[routes]]\npath = "/"\n'
            'proxy = { upstream = "api", upgrades = ["web socket"] }\n',
            "routes[0].proxy.upgrades: expected protocol names as Upgrade carries them "
            '(websocket), got "web socket"',
        ),
        (
            UP + '[[routes]]\npath = "/"\nproxy = "api"\nreturn = { body = "x" }\n',
            "routes[0]: expected exactly one handler (app, static, redirect, return or proxy), "
            "got return and proxy",
        ),
    ],
)
def test_problems_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    found = problems(tmp_path, text)
    assert any(p.startswith(message) or message in p for p in found), found


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_proxy_flag_makes_an_upstream_and_a_route() -> None:
    ns = parse("--proxy", "/api=http://10.0.0.5:8000,http://10.0.0.6:8000")
    config = load(ns, {}, require_app=True).config
    (route,) = config.routes
    assert route.path == "/api" and route.proxy is not None
    assert config.upstreams[route.proxy.upstream].servers == (
        "http://10.0.0.5:8000",
        "http://10.0.0.6:8000",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/api", "command line --proxy: expected PREFIX=URL"),
        ("/api=ftp://x", "command line --proxy: upstreams.cli-proxy-1.servers: expected"),
    ],
)
def test_bad_proxy_flag(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(parse("--proxy", spec), {}, require_app=True)
    assert message in str(err.value)
