"""Access rules (edge/access.py), their configuration messages, and the routing path of
encoded slashes (edge/router.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.errors import ConfigError
from bastion.config.load import load_config
from bastion.edge.access import AccessControl, AccessRuleError, parse_rule
from bastion.edge.router import routing_path


def test_first_match_wins() -> None:
    rules = AccessControl(["deny 10.0.0.1", "allow 10.0.0.0/8", "deny all"])
    assert not rules.allows("10.0.0.1")
    assert rules.allows("10.0.0.2")
    assert not rules.allows("192.0.2.1")
    assert not rules.allows(None)
    assert AccessControl(["deny 10.0.0.0/8"]).allows("192.0.2.1")  # no match: allowed


def test_ipv4_mapped_ipv6_matches_ipv4_rules() -> None:
    rules = AccessControl(["allow 10.0.0.0/8", "deny all"])
    assert rules.allows("::ffff:10.0.0.1")
    assert not rules.allows("::ffff:192.0.2.1")
    # and a rule written as a mapped network means the IPv4 one
    mapped = AccessControl(["allow ::ffff:10.0.0.0/104", "deny all"])
    assert mapped.allows("10.1.1.1") and mapped.allows("::ffff:10.1.1.1")
    assert not mapped.allows("11.0.0.1")


def test_ipv6_rules() -> None:
    rules = AccessControl(["allow 2001:db8::/32", "allow ::1", "deny all"])
    assert rules.allows("2001:db8::5") and rules.allows("::1")
    assert not rules.allows("2001:db9::1") and not rules.allows("127.0.0.1")


def test_unix_clients_match_only_all() -> None:
    assert AccessControl(["deny 0.0.0.0/0", "deny ::/0", "allow all"]).allows(None)
    assert not AccessControl(["allow 0.0.0.0/0", "deny all"]).allows(None)


@pytest.mark.parametrize(
    "rule", ["allow", "permit 10.0.0.0/8", "deny 10.0.0.0/33", "allow 10.0.0.0/8 x", "deny any"]
)
def test_bad_rules(rule: str) -> None:
    with pytest.raises(AccessRuleError):
        parse_rule(rule)


def test_config_messages_name_file_key_and_form(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(
        '[server]\nforwarded_allow_ips = ["10.0.0.0/8", "nonsense"]\n'
        'proxy_protocol = ["127.0.0.1:9"]\n\n'
        '[[routes]]\npath = "/"\nreturn = {}\naccess = ["allow 10.0.0.0/8", "deny everyone"]\n'
    )
    with pytest.raises(ConfigError) as err, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        load_config(file="bastion.toml", env={}, cli={})
    text = "\n".join(err.value.problems)
    assert (
        "bastion.toml:2: server.forwarded_allow_ips[1]: expected an IP address, a network like "
        '10.0.0.0/8, "unix" or "*", got \'nonsense\''
    ) in text
    assert (
        "bastion.toml:3: server.proxy_protocol[0]: expected one of server.bind "
        '["127.0.0.1:8000"] or "*", got "127.0.0.1:9"'
    ) in text
    assert "bastion.toml:8: routes[0].access[1]: expected an address or network" in text
    assert "got 'everyone'" in text


def test_config_accepts_good_values(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(
        '[server]\nbind = ["127.0.0.1:8000", "unix:/tmp/x.sock"]\n'
        'forwarded_allow_ips = ["10.0.0.0/8, 192.168.0.1", "unix"]\n'
        'proxy_protocol = ["unix:/tmp/x.sock"]\nforwarded_header = "forwarded"\n\n'
        '[[routes]]\npath = "/"\nreturn = {}\naccess = ["allow ::1", "deny all"]\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        config = load_config(file="bastion.toml", env={}, cli={})
    assert config.routes[0].access == ("allow ::1", "deny all")
    assert config.server.forwarded_header == "forwarded"


@pytest.mark.parametrize(
    ("path", "routed"),
    [
        ("/admin", "/admin"),
        ("/admin%2Fusers", "/admin/users"),
        ("/%2Fadmin", "/admin"),
        ("/x%2F..%2Fadmin", "/admin"),
        ("/a%2F.%2Fb%2F..", "/a/"),
        ("/%2F%2F", "/"),
    ],
)
def test_routing_path(path: str, routed: str) -> None:
    assert routing_path(path) == routed
