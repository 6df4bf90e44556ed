"""One rule for the header fields bastion sends: what the wire layer refuses in a
response head an app gives (bastion.protocol.fields, used by H1Exchange), the edge's
header rules (edge/headers.py) and the configuration checks refuse too, byte for byte."""

from __future__ import annotations

import asyncio

import pytest

from bastion.config.route_checks import bad_header_name, bad_header_value
from bastion.config.schema import HeadersConfig
from bastion.edge.headers import headers_filter
from bastion.protocol.fields import valid_header_name, valid_header_value
from bastion.protocol.h1_exchange import H1Exchange
from bastion.protocol.types import InvalidResponse
from tests.unit.h1_harness import make_conn, settle


def sent_by_an_app(name: bytes, value: bytes) -> bool:
    """Whether the real exchange takes this header from a handler (and sends it)."""
    outcome: list[bool] = []

    def handler(ex: H1Exchange) -> None:
        try:
            ex.start_response(200, [(name, value)])
        except InvalidResponse:
            outcome.append(False)
            ex.start_response(500, [])
        else:
            outcome.append(True)
        ex.finish(b"")

    async def main() -> bytes:
        proto, transport, _ = make_conn(handler)
        proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle()
        return transport.take()

    wire = asyncio.run(main())
    assert outcome, wire
    if outcome[0]:
        assert b"\r\n" + name + b": " + value + b"\r\n" in wire
    return outcome[0]


def configured(name: str, value: str) -> bool:
    """Whether the edge takes this header as a ``[headers] add`` rule."""
    try:
        headers_filter(HeadersConfig(add={name: value}))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("char", ["\x01", "\x7f"])
def test_control_characters_refused_in_both_places(char: str) -> None:
    value = f"a{char}b"
    assert not sent_by_an_app(b"x-a", value.encode("latin-1"))
    assert not configured("X-A", value)
    assert bad_header_value(value)


def test_a_plain_value_is_taken_in_both_places() -> None:
    assert sent_by_an_app(b"x-a", b"a\tb c~")
    assert configured("X-A", "a\tb c~")
    assert not bad_header_value("a\tb c~")


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_gets_the_same_answer_everywhere(byte: int) -> None:
    char = chr(byte)
    value = f"a{char}b"
    on_wire = valid_header_value(value.encode("latin-1"))
    assert configured("X-A", value) is on_wire
    assert bad_header_value(value) is (not on_wire)
    name = f"x{char}y"
    name_ok = valid_header_name(name.encode("latin-1"))
    assert configured(name, "v") is name_ok
    assert bad_header_name(name) is (not name_ok)


def test_the_wire_refuses_what_the_rule_refuses() -> None:
    for byte in (0x00, 0x01, 0x08, 0x0A, 0x0D, 0x1F, 0x7F):
        assert not sent_by_an_app(b"x-a", b"a" + bytes([byte]) + b"b"), hex(byte)
    for byte in (0x09, 0x20, 0x7E, 0x80, 0xFF):
        assert sent_by_an_app(b"x-a", b"a" + bytes([byte]) + b"b"), hex(byte)
