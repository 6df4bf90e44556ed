#!/usr/bin/env python3
"""Write bench/README.md's tables of figures from the results files (never by hand).

For each workload the table takes the newest results file in bench/results/ that measured
it with bastion and every server the workload compares it with (leaving out ``--quick``
runs; a run of some servers only, ``--servers``, counts only when no full run exists), so
that a row's ratios all come from one run. Each row names its run and its processor, and
says when the tree measured differed from its commit (``dirty``), when other processes
disturbed a server's run, when wrk used all of its core, and when a run was void. The
tables go between the marker comments
``<!-- report:NAME -->`` and ``<!-- /report:NAME -->`` of the README.

    .venv/bin/python bench/report.py            # rewrite the tables (make bench runs it)
    .venv/bin/python bench/report.py --check    # exit 1 if the tables are out of date
    .venv/bin/python bench/report.py --print    # print the tables, change nothing
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.servers import BENCH, RESULTS
from harness.workloads import CEILING, NOISY_PCT, WORKLOADS, interference, void_reason
from harness.workloads import check_targets as foundation_targets

CLIENT_BOUND_PCT = 97.0  # as in run.py: wrk's core this busy, the figure may be wrk's limit
README = BENCH / "README.md"

FOUNDATION_LABELS = {
    "asgi-plaintext": "ASGI plaintext",
    "asgi-json": "ASGI JSON (FastAPI)",
    "asgi-echo": "ASGI 10 KiB echo",
    "wsgi-plaintext": "WSGI plaintext, inline",
    "wsgi-threads": "WSGI plaintext, 8 threads",
    "wsgi-echo": "WSGI 10 KiB echo",
    "flask-json": "Flask JSON",
    "asgi-gzip": "ASGI 8 KiB JSON, gzip",
}
FOUNDATION_COLUMNS = {
    CEILING: "ceiling",
    "granian": "Granian",
    "uvicorn": "uvicorn",
    "gunicorn": "gunicorn gthread",
    "hypercorn": "Hypercorn",
    "waitress": "waitress",
}
STATIC_LABELS = {
    "static-1k": "1 KiB",
    "static-100k": "100 KiB",
    "static-1m": "1 MiB",
    "static-304": "304",
}
STATIC_COLUMNS = {"nginx": "nginx", "starlette": "Starlette", "whitenoise": "WhiteNoise"}


# -- results files ------------------------------------------------------------------------


def load_results(directory: Path, prefix: str) -> list[tuple[Path, dict[str, Any]]]:
    """The results files of one kind (``static-`` or the foundation's), newest first;
    ``--quick`` runs left out."""
    found = []
    pattern = f"{prefix}[0-9]*.json"  # static-<time>.json, or <time>.json (run.py)
    for path in directory.glob(pattern):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "--quick" in report.get("command", []):
            continue
        found.append((path, report))
    found.sort(key=lambda item: str(item[1].get("started", "")), reverse=True)
    return found


def newest_rows(
    files: list[tuple[Path, dict[str, Any]]], workload: str, servers: tuple[str, ...] = ()
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]] | None:
    """The newest run of ``workload`` with a bastion row and a row for each of
    ``servers`` (else the newest with a bastion row): (file, report, rows)."""
    partial = None
    for path, report in files:
        rows = report.get("workloads", {}).get(workload, {}).get("rows", [])
        measured = {r.get("server") for r in rows}
        if "bastion" not in measured:
            continue
        if measured.issuperset(servers):
            return path, report, rows
        if partial is None:
            partial = path, report, rows
    return partial


def tree_of(report: dict[str, Any]) -> tuple[str, bool]:
    """(short commit, dirty) of the tree a run measured; older files only have
    ``git describe --dirty``."""
    tree = report.get("tree")
    if tree:
        return str(tree.get("commit", ""))[:7] or "?", bool(tree.get("dirty"))
    described = str(report.get("versions", {}).get("bastion", {}).get("git", "?"))
    return described.removesuffix("-dirty"), described.endswith("-dirty")


# -- cells ----------------------------------------------------------------------------------


def _usable(row: dict[str, Any] | None) -> bool:
    return bool(row and row.get("ok") and not void_reason(row) and row.get("rps"))


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def _cell_of(row: dict[str, Any] | None, ours: dict[str, Any] | None) -> str:
    """A peer's cell: bastion's req/s divided by its own, or why there is no figure."""
    if row is None:
        return "-"
    if not row.get("ok"):
        return "failed"
    if why := void_reason(row):
        return f"VOID ({why})"
    if not _usable(ours):
        return f"({row['rps']:,.0f} req/s)"
    assert ours is not None
    return _ratio(ours["rps"] / row["rps"])


def _bastion_cell(row: dict[str, Any], extra: Callable[[dict[str, Any]], str] | None) -> str:
    if not row.get("ok"):
        return "failed"
    if why := void_reason(row):
        return f"VOID ({why})"
    return f"{row['rps']:,.0f}" + (extra(row) if extra else "")


def _run_cell(path: Path, report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    commit, dirty = tree_of(report)
    notes = [f"`{path.stem}`", commit + (" **dirty tree**" if dirty else "")]
    # ratios to a compiled peer move with the processor (Granian's Rust gains more than
    # Python on some): the machine is named with every run
    if cpu := str(report.get("machine", {}).get("cpu_model", "")):
        notes.append(cpu.replace("(R)", ""))
    disturbed = [
        f"{r['server']} {interference(r):.0f}%"
        for r in rows
        if r.get("ok") and interference(r) > NOISY_PCT
    ]
    if disturbed:
        notes.append("**disturbed**: " + ", ".join(disturbed))
    bound = [
        r["server"]
        for r in rows
        if _usable(r) and float(r.get("client_cpu_pct", 0)) > CLIENT_BOUND_PCT
    ]
    if bound:
        notes.append("wrk at its limit: " + ", ".join(bound))
    return "; ".join(notes)


def table(
    files: list[tuple[Path, dict[str, Any]]],
    labels: dict[str, str],
    columns: dict[str, str],
    bastion_extra: Callable[[dict[str, Any]], str] | None = None,
    servers: dict[str, tuple[str, ...]] | None = None,
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """The markdown lines of one table, and the rows each workload's line came from."""
    lines = [
        "| workload | bastion req/s | " + " | ".join(columns.values()) + " | run |",
        "| --- | ---: | " + " | ".join("---:" for _ in columns) + " | --- |",
    ]
    used: dict[str, list[dict[str, Any]]] = {}
    for workload, label in labels.items():
        found = newest_rows(files, workload, (servers or {}).get(workload, ()))
        if found is None:
            continue
        path, report, rows = found
        used[workload] = rows
        by_server = {r["server"]: r for r in rows}
        ours = by_server["bastion"]
        cells = [_cell_of(by_server.get(name), ours) for name in columns]
        lines.append(
            f"| {label} | {_bastion_cell(ours, bastion_extra)} | "
            + " | ".join(cells)
            + f" | {_run_cell(path, report, rows)} |"
        )
    return lines, used


def target_lines(targets: list[dict[str, Any]]) -> list[str]:
    lines = []
    for t in targets:
        lines.append(f"- **{t['verdict']}** {t['target']}: {t['detail']}")
    return lines


# -- the two sections ---------------------------------------------------------------------


def foundation_section(directory: Path) -> list[str]:
    files = load_results(directory, "")
    labels = {w.name: FOUNDATION_LABELS.get(w.name, w.name) for w in WORKLOADS}
    servers = {w.name: w.servers for w in WORKLOADS}
    lines, used = table(files, labels, FOUNDATION_COLUMNS, servers=servers)
    if not used:
        return ["No results yet: run `make bench`."]
    head = [
        "bastion's req/s, and bastion's req/s divided by each other server's (above 1x:",
        "bastion served more). VOID: wrk saw errors during that run, so it has no figure.",
        "",
    ]
    tail = ["", "Targets, from the same runs:", "", *target_lines(foundation_targets(used))]
    return head + lines + tail


def static_section(directory: Path) -> list[str]:
    import static  # bench/static.py: its targets

    files = load_results(directory, "static-")

    def mib(row: dict[str, Any]) -> str:
        return f" ({row['body_mib_s']:,.0f} MiB/s)" if "body_mib_s" in row else ""

    lines, used = table(files, STATIC_LABELS, STATIC_COLUMNS, mib)
    if not used:
        return ["No results yet: run `make bench-static`."]
    head = [
        "bastion's req/s (MiB/s of file bodies), and bastion's req/s divided by each other",
        "server's. A `-` is a server that run did not measure.",
        "",
    ]
    targets = static.check_targets(used)
    tail = ["", "Targets, from the same runs:", "", *target_lines(targets)]
    return head + lines + tail


SECTIONS: dict[str, Callable[[Path], list[str]]] = {
    "foundation": foundation_section,
    "static": static_section,
}


def render(text: str, directory: Path) -> str:
    """``text`` with every marked section regenerated."""
    for name, build in SECTIONS.items():
        begin, end = f"<!-- report:{name} -->", f"<!-- /report:{name} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            continue  # the README has no place for this section
        body = "\n".join([begin, "<!-- generated by bench/report.py: do not edit -->", ""])
        body += "\n".join([*build(directory), "", end])
        match = pattern.search(text)
        assert match is not None
        text = text[: match.start()] + body + text[match.end() :]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--results", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--readme", type=Path, default=README, help="the file to update")
    p.add_argument("--check", action="store_true", help="exit 1 if the tables are out of date")
    p.add_argument("--print", action="store_true", help="print the tables, change nothing")
    args = p.parse_args(argv)
    if args.print:
        for name, build in SECTIONS.items():
            print(f"## {name}\n")
            print("\n".join(build(args.results)) + "\n")
        return 0
    before = args.readme.read_text()
    after = render(before, args.results)
    if args.check:
        if after != before:
            print(f"{args.readme}: tables out of date (run bench/report.py)", file=sys.stderr)
            return 1
        return 0
    if after != before:
        args.readme.write_text(after)
        print(f"{args.readme}: tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
