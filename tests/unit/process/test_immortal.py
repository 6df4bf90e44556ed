"""process/immortal.py: what it makes immortal and what it leaves mortal (each probe in
a fresh interpreter: an immortal object is never freed, so the test process must not
make its own objects so)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bastion.process.immortal import supported

PROBE = r"""
import gc, json, mmap, select, socket, sys, tempfile
from bastion.process.immortal import immortalize

finalized = []

class Plain:
    def method(self):
        return 1

class Finalized:
    def __del__(self):
        finalized.append("object with __del__")

class Holder:
    def __init__(self, sock):
        self.sock = sock
        self.name = "holder"

exported = bytearray(b"abc")

def gen():
    yield 1

holder = {
    "plain": Plain(),
    "list": [1.5, "a" * 40, (3.5, 4.5)],
    "finalized": Finalized(),
    "generator": gen(),
    "file": tempfile.TemporaryFile(),
    "socket": socket.socket(),
    "epoll": select.epoll(),
    "mmap": mmap.mmap(-1, 4096),
    "memoryview": memoryview(exported),
    "holder": Holder(socket.socket()),
    "holders holding each other": [Holder(socket.socket()), Holder(socket.socket())],
}
first, second = holder["holders holding each other"]
first.peer, second.peer = second, first
del first, second
vars(holder["holder"])  # (its __dict__ made a dict of its own)
values = [holder["list"][0], holder["list"][2]]
count, seconds = immortalize()

def refcount(obj):
    return sys.getrefcount(obj)

state = {name: refcount(obj) for name, obj in holder.items()}
state["function"] = refcount(Plain.method)
state["class"] = refcount(Plain)
state["float in a list"] = refcount(values[0])
state["tuple in a list"] = refcount(values[1])
state["module dict"] = refcount(vars(sys.modules[__name__]))
fds = {name: holder[name].fileno() for name in ("file", "socket", "epoll")}
fds["socket held by an object"] = holder["holder"].sock.fileno()
del values
holder.clear()
gc.collect()
closed = []
import os
for name, fd in fds.items():
    try:
        os.fstat(fd)
    except OSError:
        closed.append(name)
try:
    exported.extend(b"def")  # (the memory view was freed: nothing exports it any more)
    grew = True
except BufferError:
    grew = False
print(json.dumps({"count": count, "state": state, "finalized": finalized, "closed": closed,
                  "grew": grew}))
"""


ALL_CLOSED = ["epoll", "file", "socket", "socket held by an object"]


def _probe() -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not supported(), reason="Python 3.12 and 3.13 only")
def test_objects_become_immortal_and_those_with_finalizers_or_resources_stay_mortal() -> None:
    found = _probe()
    assert isinstance(found["count"], int) and found["count"] > 1000
    state = found["state"]
    assert isinstance(state, dict)
    immortal = 0xFFFFFFFF
    for name in ("plain", "list", "function", "class", "float in a list", "tuple in a list"):
        assert state[name] == immortal, name
    assert state["module dict"] == immortal
    stay = ("finalized", "generator", "file", "socket", "epoll", "mmap", "memoryview", "holder")
    for name in stay:
        assert state[name] < 100, name
    # and so, dropped, they are finalized and release what they hold
    assert found["finalized"] == ["object with __del__"]
    assert sorted(found["closed"]) == ALL_CLOSED  # type: ignore[arg-type]
    assert found["grew"] is True


@pytest.mark.skipif(supported(), reason="a Python without immortal objects")
def test_on_a_python_without_immortal_objects_nothing_changes() -> None:
    found = _probe()
    assert found["count"] == 0
    state = found["state"]
    assert isinstance(state, dict)
    assert all(count < 100 for count in state.values()), state
    assert sorted(found["closed"]) == ALL_CLOSED  # type: ignore[arg-type]
    assert found["grew"] is True


def test_a_walk_that_fails_is_logged_and_bastion_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bastion.process import immortal, startup

    def broken() -> tuple[int, float]:
        raise TypeError("an object no walk expected")

    monkeypatch.setattr(immortal, "immortalize", broken)
    with caplog.at_level("WARNING"):
        startup.share_with_workers()
    assert [r.getMessage() for r in caplog.records] == [
        "workers.immortalize: left off (TypeError: an object no walk expected)"
    ]
