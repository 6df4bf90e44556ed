"""Per-client limits count an IPv6 client by its prefix, an IPv4 one by its address."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.protocol.client_group import client_group
from bastion.protocol.http1 import HTTP1Protocol, ProtocolSettings
from bastion.protocol.state import ConnectionTracker
from tests.unit.h1_harness import FakeTransport, hello_handler


@pytest.mark.parametrize(
    ("host", "prefix", "group"),
    [
        ("203.0.113.7", 64, "203.0.113.7"),
        ("2001:db8:1:2::a", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:0db8:0001:0002:0000:0000:0000:000a", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::a", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2::a", 128, "2001:db8:1:2::a"),
        ("2001:0db8::0a", 128, "2001:db8::a"),
        ("::ffff:10.0.0.1", 64, "10.0.0.1"),
        ("::ffff:a00:1", 64, "10.0.0.1"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("unix", 64, "unix"),
        ("not:an:address:at:all", 64, "not:an:address:at:all"),
    ],
)
def test_client_group(host: str, prefix: int, group: str) -> None:
    assert client_group(host, prefix) == group
    assert client_group(host, prefix) == group  # (from the cache)


def test_addresses_of_one_network_are_one_client() -> None:
    groups = {client_group(f"2001:db8:aa:bb::{i:x}", 64) for i in range(1, 200)}
    assert groups == {"2001:db8:aa:bb::/64"}
    assert client_group("2001:db8:aa:bc::1", 64) != client_group("2001:db8:aa:bb::1", 64)


class PeerTransport(FakeTransport):
    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.peer, 40000, 0, 0)
        return super().get_extra_info(name, default)


def connect_all(peers: list[str], prefix: int) -> list[bool]:
    """Whether each connection, from ``peers`` in turn, was let in (one tracker, two
    connections per client at most)."""
    tracker = ConnectionTracker()
    settings = ProtocolSettings(max_connections_per_client=2, client_ipv6_prefix=prefix)

    async def main() -> list[bool]:
        admitted = []
        for peer in peers:
            proto = HTTP1Protocol(settings, hello_handler, tracker)
            transport = PeerTransport(peer)
            transport.protocol = proto
            proto.connection_made(transport)  # type: ignore[arg-type]
            admitted.append(not bytes(transport.data).startswith(b"HTTP/1.1 503"))
        return admitted

    return asyncio.run(main())


def test_the_connection_cap_counts_an_ipv6_client_by_its_prefix() -> None:
    peers = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3", "2001:db8:1:3::1"]
    assert connect_all(peers, 64) == [True, True, False, True]
    assert connect_all(peers, 128) == [True, True, True, True]
