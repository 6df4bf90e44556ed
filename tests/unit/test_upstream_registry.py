"""The site's upstream groups: one :class:`Upstream` per group, whatever the number of
routes proxying to it, started and stopped once (the metrics list each group once)."""

from __future__ import annotations

from pathlib import Path

from bastion.config.load import load_config
from bastion.edge.assemble import Site, build_site
from bastion.edge.proxy import ProxyHandler
from bastion.upstream import group as group_module
from tests.unit.fake_exchange import run_async


def test_routes_naming_one_group_share_one_upstream_started_once(tmp_path: Path) -> None:
    config_file = tmp_path / "b.toml"
    config_file.write_text(
        '[upstreams.api]\nservers = ["127.0.0.1:9"]\n'
        '[upstreams.other]\nservers = ["127.0.0.1:10"]\n'
        '[[routes]]\npath = "/a/"\nproxy = { upstream = "api", strip_prefix = true }\n'
        '[[routes]]\npath = "/b/"\nproxy = "api"\n'
        '[[routes]]\npath = "/c/"\nproxy = "other"\n'
    )
    config = load_config(file=str(config_file), env={}, cli={})
    site = build_site(config)
    assert isinstance(site, Site)
    handlers = [p.route_handler for p in site.pipelines]
    assert all(isinstance(h, ProxyHandler) for h in handlers)
    a, b, c = (h for h in handlers if isinstance(h, ProxyHandler))
    assert a.upstream is b.upstream
    assert a.upstream is not c.upstream
    assert (a.prefix, b.prefix) == (b"/a", b"")  # route settings stay per route

    async def life() -> list[str]:
        await site.startup()
        names = sorted(g.name for g in group_module.RUNNING)
        await site.shutdown(0)
        return names

    assert run_async(life()) == ["api", "other"]
    assert not group_module.RUNNING
