"""Checks and helpers for the ``[[process]]`` tables (managed processes)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal

from bastion.config.schema import ProcessConfig


def command_of(cfg: ProcessConfig) -> list[str]:
    if isinstance(cfg.command, str):
        return shlex.split(cfg.command)
    return list(cfg.command)


def check_process(cfg: ProcessConfig) -> list[str]:
    """Problems of one ``[[process]]`` table beyond its types."""
    problems = []
    if not cfg.name:
        problems.append("name is empty")
    try:
        command = command_of(cfg)
    except ValueError as exc:
        problems.append(f"command: {exc}")
    else:
        if not command:
            problems.append("command is empty")
        elif cfg.cwd and not os.path.isdir(cfg.cwd):
            problems.append(f"cwd: {cfg.cwd!r} is not a directory")
        else:
            missing = _missing_program(command[0], cfg)
            if missing:
                problems.append(f"command: {missing}")
    if not cfg.stop_signal.upper().startswith("SIG") or not hasattr(
        signal, cfg.stop_signal.upper()
    ):
        problems.append(f"stop_signal: {cfg.stop_signal!r} is not a signal name (SIGTERM)")
    if cfg.backoff_max < cfg.backoff_min:
        problems.append("backoff_max is shorter than backoff_min")
    return problems


def _missing_program(program: str, cfg: ProcessConfig) -> str:
    """Why ``program`` cannot be started ("" if it can): found as a subprocess would
    look for it (a path with "/" from ``cwd``, anything else on ``PATH``, the one in
    ``env`` if set), so that a typo fails at start-up, not in a loop of restarts."""
    if "/" in program:
        path = os.path.join(cfg.cwd, program) if cfg.cwd else program
        if not os.path.isfile(path):
            return f"{program!r} does not exist"
        if not os.access(path, os.X_OK):
            return f"{program!r} is not executable"
        return ""
    search = cfg.env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(program, path=search) is None:
        return f"{program!r} is not found on PATH"
    return ""
