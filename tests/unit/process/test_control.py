"""The control pipe: JSON lines from a worker, read without blocking, in pieces."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bastion.process.control import ControlReader, ControlWriter, Message


@pytest.fixture
def pipe() -> Iterator[tuple[ControlReader, ControlWriter]]:
    read_fd, write_fd = os.pipe()
    reader, writer = ControlReader(read_fd), ControlWriter(write_fd)
    yield reader, writer
    reader.close()
    writer.close()


def test_messages_arrive_whole_and_in_order(pipe: tuple[ControlReader, ControlWriter]) -> None:
    reader, writer = pipe
    writer.send(Message(kind="ready", interface="asgi"))
    writer.send(Message(kind="recycle"))
    assert list(reader.read()) == [Message(kind="ready", interface="asgi"), Message(kind="recycle")]
    assert list(reader.read()) == []
    assert not reader.closed


def test_a_message_split_across_reads_is_held_until_its_end(
    pipe: tuple[ControlReader, ControlWriter],
) -> None:
    reader, writer = pipe
    line = b'{"kind":"failed","message":"ImportError: no module named redis"}\n'
    os.write(writer.fd, line[:10])
    assert list(reader.read()) == []
    os.write(writer.fd, line[10:-1])
    assert list(reader.read()) == []
    os.write(writer.fd, line[-1:] + b'{"kind":"rea')
    assert list(reader.read()) == [
        Message(kind="failed", message="ImportError: no module named redis")
    ]
    os.write(writer.fd, b'dy"}\n')
    assert list(reader.read()) == [Message(kind="ready")]


def test_a_multi_line_error_is_one_message(pipe: tuple[ControlReader, ControlWriter]) -> None:
    reader, writer = pipe
    message = 'Traceback (most recent call last):\n  File "main.py", line 1\nKeyError: "x"'
    writer.send(Message(kind="failed", message=message))
    assert list(reader.read()) == [Message(kind="failed", message=message)]


def test_lines_that_are_not_messages_are_skipped(
    pipe: tuple[ControlReader, ControlWriter],
) -> None:
    reader, writer = pipe
    os.write(writer.fd, b'garbage\n{"kind":"nonsense"}\n\n{"kind":"recycle"}\n')
    assert list(reader.read()) == [Message(kind="recycle")]


def test_the_end_of_the_pipe_is_noticed(pipe: tuple[ControlReader, ControlWriter]) -> None:
    reader, writer = pipe
    writer.send(Message(kind="ready"))
    writer.close()
    assert list(reader.read()) == [Message(kind="ready")]
    assert reader.closed
    reader.close()
    assert reader.fd == -1
    reader.close()  # twice is harmless


def test_a_worker_whose_supervisor_is_gone_does_not_fail_on_send(
    pipe: tuple[ControlReader, ControlWriter],
) -> None:
    reader, writer = pipe
    reader.close()
    writer.send(Message(kind="recycle"))  # EPIPE, swallowed
