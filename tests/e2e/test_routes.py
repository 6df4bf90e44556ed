"""Routes through the real ``bastion``: hosts, match kinds, redirects, fixed responses,
two apps side by side, a static-only site, ``--static`` on the command line, and the
configuration errors a user sees."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server import APPS, BastionProcess, child_env

SITE = """
[app]
target = "route_asgi:app"

[apps.legacy]
target = "route_wsgi:app"

[headers]
add = {{ "X-Site" = "all" }}

[[routes]]
host = "admin.example.com"
path = "/"
return = {{ body = "admin site" }}

[[routes]]
host = "*.example.com"
path = "/"
return = {{ body = "some subdomain" }}

[[routes]]
path = "/robots.txt"
match = "exact"
[routes.return]
body = "User-agent: *\\nDisallow: /api/\\n"
headers = {{ "Cache-Control" = "max-age=3600" }}
[routes.headers]
add = {{ "X-Route" = "robots" }}

[[routes]]
path = "/old/(?P<year>\\\\d{{4}})/(?P<slug>[a-z-]+)"
match = "regex"
redirect = {{ to = "/blog/{{year}}/{{slug}}?{{query}}", status = 301 }}

[[routes]]
path = "/docs/"
redirect = {{ to = "https://docs.example.com{{path}}", status = 308 }}

[[routes]]
path = "/form"
match = "exact"
methods = ["POST"]
return = {{ status = 201, body = "created" }}

[[routes]]
path = "/static/"
static = {{ root = "{static}" }}

[[routes]]
path = "/api/"
app = "default"

[[routes]]
path = "/legacy"
app = "legacy"

[[routes]]
path = "/blog/"
match_headers = {{ "X-Preview" = "1" }}
return = {{ body = "preview" }}

[[routes]]
path = "/blog/"
return = {{ body = "blog" }}
"""


def write_site(tmp: Path) -> Path:
    static = tmp / "public"
    (static / "css").mkdir(parents=True)
    (static / "css" / "site.css").write_text("body { color: red }\n")
    config = tmp / "bastion.toml"
    config.write_text(SITE.format(static=static))
    return config


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionProcess]:
    config = write_site(tmp_path_factory.mktemp("site"))
    proc = BastionProcess(["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"])
    with proc:
        yield proc


def get(site: BastionProcess, path: str, **kw: object) -> httpx.Response:
    return httpx.get(site.url + path, timeout=10, **kw)  # type: ignore[arg-type]


def test_two_apps_mounted_with_root_path(site: BastionProcess) -> None:
    api = get(site, "/api/items?x=1").json()
    assert api == {
        "app": "asgi",
        "root_path": "/api",
        "path": "/api/items",
        "raw_path": "/api/items",
        "query": "x=1",
    }
    legacy = get(site, "/legacy/page/2?y=2").json()
    assert legacy == {
        "app": "wsgi",
        "script_name": "/legacy",
        "path_info": "/page/2",
        "query": "y=2",
    }
    assert get(site, "/legacy").json()["path_info"] == ""
    assert get(site, "/legacyfoo").status_code == 404


def test_host_routing(site: BastionProcess) -> None:
    assert get(site, "/", headers={"Host": "admin.example.com"}).text == "admin site"
    assert get(site, "/", headers={"Host": "ADMIN.example.com:8080"}).text == "admin site"
    assert get(site, "/x", headers={"Host": "www.example.com"}).text == "some subdomain"
    assert get(site, "/", headers={"Host": "a.b.example.com"}).text == "some subdomain"
    # other hosts fall through to the host-less routes; "/" has none: 404
    assert get(site, "/", headers={"Host": "example.com"}).status_code == 404


def test_return_for_robots_txt_and_head(site: BastionProcess) -> None:
    r = get(site, "/robots.txt")
    assert r.status_code == 200
    assert r.text == "User-agent: *\nDisallow: /api/\n"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["cache-control"] == "max-age=3600"
    h = httpx.head(site.url + "/robots.txt", timeout=10)
    assert h.status_code == 200
    assert h.headers["content-length"] == str(len(r.content))
    assert h.content == b""
    assert get(site, "/robots.txt/x").status_code == 404  # exact


def test_redirect_with_captures_and_query_via_curl(site: BastionProcess) -> None:
    out = subprocess.run(
        ["curl", "-si", site.url + "/old/2024/hello-world?ref=feed"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    head = out.split("\n\n", 1)[0].lower().splitlines()  # text mode turned CRLF into LF
    assert head[0].startswith("http/1.1 301 ")
    assert "location: /blog/2024/hello-world?ref=feed" in head
    assert "content-length: 0" in head
    r = get(site, "/old/2024/hello-world")
    assert r.headers["location"] == "/blog/2024/hello-world"  # no "?" without a query
    r = get(site, "/docs/guide/a%20b.html")
    assert r.status_code == 308
    assert r.headers["location"] == "https://docs.example.com/guide/a%20b.html"


def test_methods_405_with_allow(site: BastionProcess) -> None:
    assert httpx.post(site.url + "/form", timeout=10).text == "created"
    r = get(site, "/form")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


def test_static_route_and_match_headers(site: BastionProcess) -> None:
    r = get(site, "/static/css/site.css")
    assert r.status_code == 200
    assert r.text == "body { color: red }\n"
    assert get(site, "/static/missing.css").status_code == 404
    assert get(site, "/blog/post").text == "blog"
    assert get(site, "/blog/post", headers={"X-Preview": "1"}).text == "preview"


def test_no_route_is_404(site: BastionProcess) -> None:
    r = get(site, "/nothing/here")
    assert r.status_code == 404
    assert r.text == "Not Found\n"
    assert r.headers["x-site"] == "all"  # the top-level filters apply to 404s too


def test_filters_per_route(site: BastionProcess) -> None:
    robots = get(site, "/robots.txt")
    assert robots.headers["x-route"] == "robots"
    assert "x-site" not in robots.headers  # the route's table replaces the top-level one
    for path in ("/api/x", "/legacy/x", "/static/css/site.css", "/blog/"):
        r = get(site, path)
        assert r.headers["x-site"] == "all", path
        assert "x-route" not in r.headers, path


def test_static_only_site_needs_no_app(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("<h1>home</h1>\n")
    config = tmp_path / "bastion.toml"
    # preload has no app to load here: it must not stop the site
    config.write_text(
        '[workers]\npreload = true\n\n[[routes]]\npath = "/"\nstatic = { root = "www" }\n'
    )
    proc = BastionProcess(
        ["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"], cwd=tmp_path
    )
    with proc:
        assert httpx.get(proc.url + "/", timeout=10).text == "<h1>home</h1>\n"
        assert httpx.get(proc.url + "/index.html", timeout=10).status_code == 200
        assert "ready: serving 1 route with 1 worker" in proc.log  # (no app: no interface)


def test_static_on_the_command_line_before_the_app(tmp_path: Path) -> None:
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "a.txt").write_text("file a\n")
    proc = BastionProcess(
        [
            "serve",
            "route_asgi:app",
            "--app-dir",
            str(APPS),
            "--static",
            f"/assets={tmp_path / 'public'}",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "1",
        ]
    )
    with proc:
        assert httpx.get(proc.url + "/assets/a.txt", timeout=10).text == "file a\n"
        app = httpx.get(proc.url + "/other", timeout=10).json()
        assert app["app"] == "asgi"
        assert app["root_path"] == ""  # mounted at "/": no prefix


def run_bastion(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    env = child_env(base={k: v for k, v in os.environ.items() if not k.startswith("BASTION_")})
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_route_errors_exit_2_with_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(
        '[[routes]]\npath = "/"\napp = "default"\n\n'
        '[[routes]]\npath = "/x/(?P<a"\nmatch = "regex"\nreturn = { body = "x" }\n\n'
        '[[routes]]\npath = "/s/"\n[routes.static]\nroot = "./missing"\n'
    )
    r = run_bastion("serve", "-c", "bastion.toml", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert any(
        ln.startswith('bastion: error: bastion.toml:6: routes[1].path: invalid regex "/x/(?P<a": ')
        for ln in lines
    ), r.stderr
    assert (
        'bastion: error: bastion.toml:13: routes[2].static.root: no such directory: "./missing"'
        in lines
    )
    assert any("routes[0].app" in ln and "no target" in ln for ln in lines), r.stderr
    # bastion check shows the routes of the command line
    r = run_bastion("check", "--static", "/s=.", "x:app", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '[[routes]]\nhost = ""\npath = "/s"  # command line --static' in r.stdout
