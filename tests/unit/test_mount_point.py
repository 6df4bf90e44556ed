"""Where a route mounts an app (its root path): the prefix all of its routes share."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.load import load_config
from bastion.edge.assemble import app_config, mount_point


def config_of(tmp_path: Path, routes: str, app_root: str = ""):  # type: ignore[no-untyped-def]
    root = f'root_path = "{app_root}"\n' if app_root else ""
    (tmp_path / "bastion.toml").write_text(
        f'[app]\ntarget = "main:app"\n{root}\n[apps.other]\ntarget = "other:app"\n\n{routes}'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        return load_config(file="bastion.toml", env={}, cli={})


def route(path: str, app: str = "default", match: str = "") -> str:
    kind = f'match = "{match}"\n' if match else ""
    return f'[[routes]]\npath = "{path}"\n{kind}app = "{app}"\n\n'


@pytest.mark.parametrize(
    ("routes", "mount"),
    [
        ([route("/legacy")], "/legacy"),
        ([route("/legacy/")], "/legacy"),
        ([route("/")], ""),
        # access rules on a part of the app's site: still mounted where the rest is
        ([route("/admin"), route("/")], ""),
        ([route("/api/"), route("/api/admin")], "/api"),
        ([route("/api/admin"), route("/api/")], "/api"),
        ([route("/a/b/c"), route("/a/b/d")], "/a/b"),
        ([route("/a"), route("/b")], ""),
        ([route("/ab"), route("/a")], ""),  # whole segments: "/ab" is not under "/a"
        ([route("/api/"), route("/api/health", match="exact")], "/api"),
        ([route("/api/"), route("/health", match="exact")], ""),
        ([route("/api/"), route("(?i)/admin(/.*)?", match="regex")], "/api"),
        ([route("/health", match="exact")], ""),
        ([route("/x", app="other"), route("/")], ""),  # the default app at /
    ],
)
def test_mount_point(tmp_path: Path, routes: list[str], mount: str) -> None:
    assert mount_point(config_of(tmp_path, "".join(routes)), "default") == mount


def test_an_app_root_path_wins(tmp_path: Path) -> None:
    config = config_of(tmp_path, route("/admin") + route("/"), app_root="/site")
    assert app_config(config, "default").root_path == "/site"
    config = config_of(tmp_path, route("/admin") + route("/"))
    assert app_config(config, "default").root_path == ""
    config = config_of(tmp_path, route("/x", app="other") + route("/"))
    assert app_config(config, "other").root_path == "/x"
