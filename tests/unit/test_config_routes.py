"""[apps.NAME] and [[routes]]: each mistake named with its file line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.errors import ConfigError
from bastion.config.load import CliRoute, load_config, resolve
from bastion.config.render import render_config


def problems(tmp_path: Path, text: str, *, require_app: bool = True) -> tuple[str, ...]:
    (tmp_path / "bastion.toml").write_text(text)
    with pytest.raises(ConfigError) as err, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        load_config(file="bastion.toml", env={}, cli={}, require_app=require_app)
    assert err.value.exit_code == 2
    return err.value.problems


ROUTE = '[[routes]]\npath = "/"\nreturn = { body = "ok" }\n\n'


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            'path = "/"\n',
            "bastion.toml:5: routes[1]: expected exactly one handler "
            "(app, static, redirect, return or proxy), got none",
        ),
        (
            'path = "/"\nreturn = { body = "x" }\nredirect = { to = "/y" }\n',
            "bastion.toml:5: routes[1]: expected exactly one handler "
            "(app, static, redirect, return or proxy), got redirect and return",
        ),
        (
            'path = "/"\napp = "api"\n',
            'bastion.toml:7: routes[1].app: no app named "api" (the apps are default)',
        ),
        (
            'path = "/a/(?P<x"\nmatch = "regex"\nreturn = {}\n',
            'bastion.toml:6: routes[1].path: invalid regex "/a/(?P<x": '
            "missing >, unterminated name at position 7",
        ),
        (
            'path = "/s/"\nstatic = { root = "nowhere" }\n',
            'bastion.toml:7: routes[1].static.root: no such directory: "nowhere"',
        ),
        (
            'path = "/s/"\nstatic = { root = "bastion.toml" }\n',
            'bastion.toml:7: routes[1].static.root: not a directory: "bastion.toml"',
        ),
        (
            'path = "/s/"\nstatic = { index = ["index.html"] }\n',
            "bastion.toml:7: routes[1].static: missing key root (a string)",
        ),
        (
            'host = "www.*.com"\nreturn = {}\n',
            'bastion.toml:6: routes[1].host: expected a host name ("example.com"), '
            '"*.example.com" for any subdomain, or "" for any host, got "www.*.com"',
        ),
        (
            'methods = ["get"]\nreturn = {}\n',
            "bastion.toml:6: routes[1].methods[0]: expected an upper-case HTTP method like GET, "
            'got "get" (did you mean "GET"?)',
        ),
        (
            'path = "static/"\nreturn = {}\n',
            'bastion.toml:6: routes[1].path: expected a path starting with "/" '
            '(like "/static/"), got "static/"',
        ),
        (
            'path = "/(?P<id>\\\\d+)"\nmatch = "regex"\nredirect = { to = "/x/{ident}" }\n',
            "bastion.toml:8: routes[1].redirect.to: unknown placeholder {ident} "
            "(this route offers {id}, {path}, {query})",
        ),
        (
            'pth = "/x"\nreturn = {}\n',
            "bastion.toml:6: unknown key routes[1].pth (did you mean routes[1].path?)",
        ),
        (
            'return = { bdy = "x" }\n',
            "bastion.toml:6: unknown key routes[1].return.bdy "
            "(did you mean routes[1].return.body?)",
        ),
        (
            "return = { status = 99 }\n",
            "bastion.toml:6: routes[1].return.status: expected an integer from 200 to 599, got 99",
        ),
        (
            '[routes.headers]\nadd = { "X-A" = "a\\nb" }\n',
            "bastion.toml:7: routes[1].headers.add.X-A: holds characters that cannot go in a "
            'header: "a\\nb"',
        ),
    ],
)
def test_route_problems(tmp_path: Path, route: str, message: str) -> None:
    found = problems(tmp_path, ROUTE + "[[routes]]\n" + route)
    assert message in found, found


def test_routes_written_as_a_single_table(tmp_path: Path) -> None:
    assert problems(tmp_path, '[routes]\npath = "/"\n', require_app=False) == (
        "bastion.toml:1: routes: expected [[routes]] tables, one per route (two brackets), "
        "got [routes]",
    )


def test_apps_problems(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[apps.default]\ntarget = "a:b"\n\n[apps.api]\ntargt = "x:y"\n\n'
        '[apps.web]\nroot_path = "/web/"\n\n' + ROUTE,
    )
    assert found == (
        'bastion.toml:1: apps.default: the app named "default" is the top-level [app]; '
        "give this one another name",
        "bastion.toml:5: unknown key apps.api.targt (did you mean apps.api.target?)",
        "bastion.toml:4: apps.api.target: expected MODULE:ATTR, got nothing",
        "bastion.toml:7: apps.web.target: expected MODULE:ATTR, got nothing",
        'bastion.toml:8: apps.web.root_path: expected a path that starts with "/" and does '
        'not end with one (like "/api"), got "/web/"',
    )


def test_default_app_needed_only_when_a_route_uses_it(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(ROUTE)
    config = load_config(file=str(tmp_path / "bastion.toml"), env={}, cli={}, require_app=True)
    assert config.routes[0].respond is not None
    found = problems(tmp_path, ROUTE + '[[routes]]\napp = "default"\n')
    assert found == (
        'bastion.toml:6: routes[1].app: "default" is the top-level [app], which has no '
        "target: pass MODULE:ATTR or set [app] target",
    )


def test_cli_static_routes_come_first_and_add_a_catch_all(tmp_path: Path) -> None:
    static = CliRoute({"path": "/s", "static": {"root": str(tmp_path)}}, "--static")
    r = resolve(file=None, env={}, cli={"app.target": "m:app"}, cli_routes=[static])
    routes = r.config.routes
    assert [(x.path, x.app, x.static is not None) for x in routes] == [
        ("/s", "", True),
        ("/", "default", False),
    ]
    (tmp_path / "bastion.toml").write_text(ROUTE)
    r = resolve(file=str(tmp_path / "bastion.toml"), env={}, cli={}, cli_routes=[static])
    assert [x.path for x in r.config.routes] == ["/s", "/"]
    assert r.config.routes[1].respond is not None  # the file's route, no catch-all added
    text = render_config(r.config, r.sources)
    assert 'path = "/s"  # command line --static' in text
    assert f'body = "ok"  # {tmp_path / "bastion.toml"}:3' in text


def test_rendered_routes_read_back_the_same(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    text = (
        '[apps.api]\ntarget = "api:app"\n\n'
        '[[routes]]\nhost = "*.example.com"\npath = "/static/"\n'
        f'static = {{ root = "{tmp_path / "www"}", cache_control = "public" }}\n'
        '[routes.headers]\npreset = "basic"\n\n'
        '[[routes]]\npath = "/(?P<x>.*)"\nmatch = "regex"\n'
        'redirect = { to = "/n/{x}", status = 308 }\n\n'
        '[[routes]]\npath = "/api"\napp = "api"\n'
    )
    (tmp_path / "a.toml").write_text(text)
    r = resolve(file=str(tmp_path / "a.toml"), env={}, cli={})
    (tmp_path / "b.toml").write_text(render_config(r.config, r.sources))
    assert load_config(file=str(tmp_path / "b.toml"), env={}, cli={}) == r.config
