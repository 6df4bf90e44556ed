"""Checks and helpers for the ``[[process]]`` tables (managed processes)."""

from __future__ import annotations

import shlex
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
        if not command_of(cfg):
            problems.append("command is empty")
    except ValueError as exc:
        problems.append(f"command: {exc}")
    if not cfg.stop_signal.upper().startswith("SIG") or not hasattr(
        signal, cfg.stop_signal.upper()
    ):
        problems.append(f"stop_signal: {cfg.stop_signal!r} is not a signal name (SIGTERM)")
    if cfg.backoff_max < cfg.backoff_min:
        problems.append("backoff_max is shorter than backoff_min")
    return problems
