"""[[process]] tables: a program that cannot be started is a configuration error at
start-up (and in ``bastion check``), not a loop of restarts."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from bastion.config.processes import check_process
from bastion.config.schema import ProcessConfig


def problems(**fields: object) -> list[str]:
    return check_process(msgspec.convert({"name": "p", **fields}, ProcessConfig))


def test_programs_found_as_a_subprocess_would_find_them(tmp_path: Path) -> None:
    assert problems(command=["sh", "-c", "true"]) == []
    assert problems(command=f"{sys.executable} -V") == []
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert problems(command=["./run.sh"], cwd=str(tmp_path)) == []


def test_a_missing_program_or_directory_is_named(tmp_path: Path) -> None:
    assert problems(command=["celeryy", "worker"]) == ["command: 'celeryy' is not found on PATH"]
    assert problems(command=["/no/such/program"]) == ["command: '/no/such/program' does not exist"]
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    assert problems(command=[str(plain)]) == [f"command: {str(plain)!r} is not executable"]
    assert problems(command=["sh"], cwd=str(tmp_path / "gone")) == [
        f"cwd: {str(tmp_path / 'gone')!r} is not a directory"
    ]
    # the PATH the process gets is the one searched
    assert problems(command=["sh"], env={"PATH": str(tmp_path)}) == [
        "command: 'sh' is not found on PATH"
    ]
