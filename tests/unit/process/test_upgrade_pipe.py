"""How the old bastion of an upgrade tells the new one's SIGTERM (the handover) from an
operator's: what the new one wrote on the pipe it was given."""

from __future__ import annotations

import os

from bastion.process.upgrade import Upgrade


def old_side(written: bytes) -> Upgrade:
    read, write = os.pipe()
    os.set_blocking(read, False)
    if written:
        os.write(write, written)
    os.close(write)
    upgrade = Upgrade()
    upgrade.ready_read = read
    return upgrade


def test_the_new_bastion_said_it_took_over() -> None:
    assert old_side(b"sr").new_took_over()


def test_started_but_not_taken_over_is_an_operators_stop() -> None:
    assert not old_side(b"s").new_took_over()


def test_a_new_bastion_that_says_nothing_is_taken_at_its_word() -> None:
    # (a version from before the pipe: a rollback must not stop both)
    assert old_side(b"").new_took_over()


def test_what_was_said_is_kept_across_reads() -> None:
    read, write = os.pipe()
    os.set_blocking(read, False)
    upgrade = Upgrade()
    upgrade.ready_read = read
    os.write(write, b"s")
    assert not upgrade.new_took_over()
    os.write(write, b"r")
    assert upgrade.new_took_over()
    os.close(write)
