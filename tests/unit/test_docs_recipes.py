"""The Django LOGGING recipe of docs/getting-started.md is the one the example site and
the Django app of the end-to-end tests use, so the test that a traceback is logged once
(tests/e2e/test_frameworks.py) checks what the docs tell users to write."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def logging_in(source: str) -> Any:
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "LOGGING"
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("no LOGGING = {...} found")


def test_django_logging_recipe_is_the_one_tested() -> None:
    doc = (ROOT / "docs" / "getting-started.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "LOGGING" in b]
    assert len(blocks) == 1
    recipe = logging_in(blocks[0])
    for settings in (
        ROOT / "examples" / "django_site" / "mysite" / "settings.py",
        ROOT / "tests" / "e2e" / "apps" / "fw_django" / "settings.py",
    ):
        assert logging_in(settings.read_text()) == recipe, settings
    # the records reach bastion's handler on the root logger: no handler of its own
    for logger in recipe.get("loggers", {}).values():
        assert not logger.get("handlers") or logger.get("propagate") is False
