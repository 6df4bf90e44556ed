"""No import cycles in the protocol and gateway layers.

Every ``import`` statement of a module counts, wherever it stands: at the top, inside a
function, or under ``if TYPE_CHECKING:`` (a cycle that only type checkers follow still
ties two modules together). ``from package import name`` counts as importing the
submodule ``package.name`` when there is one, else the package. Importing a submodule is
not counted as importing its package's ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
CHECKED = ("bastion.protocol", "bastion.gateway")


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (found under ``root``) and its sub-packages, by name."""
    out: dict[str, Path] = {}
    base = root.joinpath(*package.split("."))
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # a relative import: resolved against the importing module's package
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {target for target in found if target in known and target != name}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for each group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_through(graph, group) for group in groups]


def cycle_through(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest import loop from the first module of ``group`` back to itself."""
    start = group[0]
    members = set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & members):
                if succ == start:
                    return [*paths[node], start]
                if succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no loop through {group}")  # pragma: no cover


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    files: dict[str, Path] = {}
    for package in packages:
        files.update(module_files(root, package))
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def describe(cycles: list[list[str]]) -> str:
    return "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("package", CHECKED)
def test_package_has_no_import_cycle(package: str) -> None:
    graph = import_graph(SRC, (package,))
    assert len(graph) > 3, f"no modules found for {package} under {SRC}"
    cycles = find_cycles(graph)
    assert not cycles, describe(cycles)


def test_protocol_and_gateway_together_have_no_import_cycle() -> None:
    cycles = find_cycles(import_graph(SRC, CHECKED))
    assert not cycles, describe(cycles)


def test_the_checker_sees_cycles_under_type_checking_and_in_functions(tmp_path: Path) -> None:
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import demo.b\nthing = 1\n"
    )
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("from demo.a import thing\n")
    (pkg / "d.py").write_text("from .a import thing\n")  # imports into the loop: not in it
    graph = import_graph(tmp_path, ("demo",))
    assert graph["demo.a"] == {"demo.b"} and graph["demo.b"] == {"demo.c"}
    assert graph["demo.d"] == {"demo.a"}
    cycles = find_cycles(graph)
    assert cycles == [["demo.a", "demo.b", "demo.c", "demo.a"]]
    assert "demo.a -> demo.b -> demo.c -> demo.a" in describe(cycles)
    (pkg / "c.py").write_text("")
    assert find_cycles(import_graph(tmp_path, ("demo",))) == []
