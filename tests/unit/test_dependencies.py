"""What a plain ``pip install`` (the one docs/getting-started.md shows) brings along is
enough for the default configuration: nothing it turns on needs an extra, so a user who
follows the docs sees no warning at start."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path

import pytest

from bastion.config.schema import CompressConfig
from bastion.edge.encoders import _PACKAGES, build_codecs

ROOT = Path(__file__).resolve().parents[2]


def core_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in project["dependencies"]}


def test_default_compression_algorithms_need_no_extra() -> None:
    core = core_requirements()
    for name in CompressConfig().algorithms:
        package = _PACKAGES.get(name)
        assert package is None or package in core, (
            f"compress.algorithms includes {name} by default, but {package} is not a core "
            "dependency: every worker would warn at start after a plain pip install"
        )


def test_getting_started_installs_without_extras() -> None:
    text = (ROOT / "docs" / "getting-started.md").read_text()
    installs = re.findall(r"^pip install .*$", text, flags=re.MULTILINE)
    assert installs and all("[" not in line for line in installs), installs


def test_default_algorithms_all_load_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    cfg = CompressConfig(enabled=True)
    with caplog.at_level(logging.WARNING):
        codecs = build_codecs(
            cfg.algorithms,
            gzip_level=cfg.gzip_level,
            brotli_quality=cfg.brotli_quality,
            zstd_level=cfg.zstd_level,
        )
    assert [c.name for c in codecs] == list(cfg.algorithms)
    assert not caplog.records
