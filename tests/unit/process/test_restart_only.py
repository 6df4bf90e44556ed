"""A SIGHUP cannot apply some settings: each change of one is logged, and nothing else."""

from __future__ import annotations

import logging

import pytest

from bastion.config.schema import Config, ServerConfig, WorkersConfig
from bastion.process.rolling_reload import warn_restart_only


def _warnings(caplog: pytest.LogCaptureFixture, old: Config, new: Config) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_restart_only(old, new)
    return [r.getMessage() for r in caplog.records]


def test_each_change_a_reload_cannot_apply_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    old = Config()
    assert _warnings(caplog, old, Config(workers=WorkersConfig(count=7, max_requests=5))) == []
    for new, name in (
        (Config(workers=WorkersConfig(preload=True)), "workers.preload"),
        (Config(workers=WorkersConfig(immortalize=False)), "workers.immortalize"),
        (Config(server=ServerConfig(reuse_port=True)), "server.reuse_port"),
    ):
        assert _warnings(caplog, old, new) == [
            f"SIGHUP: a change of {name} takes effect only after a restart"
        ]
