"""Headless Chromium through Playwright, for the tests that load bastion's pages in a
real browser; such a test is skipped where Playwright or Chromium is not installed
(scripts/system-deps.sh installs Chromium)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def need_chromium() -> Any:
    """Playwright's sync API; the test is skipped without it or without Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (scripts/system-deps.sh installs it)")
    return sync_api


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium, closed afterwards (see :func:`need_chromium`)."""
    sync_api = need_chromium()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
