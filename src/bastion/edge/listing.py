"""Directory listings (``listing = true``; off by default, like nginx's autoindex).

A plain HTML page: one link per entry, directories first, names escaped for HTML and
percent-encoded in links. Hidden names (starting with ".") are left out unless the route
shows dotfiles, and so are symlinks that lead outside the root when they may not.
"""

from __future__ import annotations

import html
import os
import stat
import time
from urllib.parse import quote

from bastion.edge.safepath import SafeRoot

__all__ = ["MAX_LISTED", "render_listing"]

MAX_LISTED = 10_000  # a listing never grows beyond this many entries


def _row(name: str, is_dir: bool, st: os.stat_result) -> str:
    shown = name + "/" if is_dir else name
    href = quote(shown, errors="surrogateescape")
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(st.st_mtime))
    size = "-" if is_dir else str(st.st_size)
    text = html.escape(shown.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return (
        f'<tr><td><a href="{html.escape(href)}">{text}</a></td><td>{when}</td><td>{size}</td></tr>'
    )


def render_listing(
    safe: SafeRoot, directory: str, shown_path: str, *, at_root: bool
) -> bytes | None:
    """The listing page for ``directory`` (an absolute path under the root), or None.

    ``shown_path`` is the request path to print as the title; ``at_root`` leaves out the
    link to the parent directory.
    """
    rows: list[tuple[bool, str, os.stat_result]] = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if name.startswith(".") and not safe.dotfiles:
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    is_dir = True
                elif stat.S_ISREG(st.st_mode):
                    is_dir = False
                else:
                    continue
                if entry.is_symlink() and not safe.inside(entry.path):
                    continue
                rows.append((not is_dir, name, st))
                if len(rows) >= MAX_LISTED:
                    break
    except OSError:
        return None
    rows.sort(key=lambda r: (r[0], r[1]))
    title = html.escape(shown_path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    parts = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
        f"<title>Index of {title}</title></head><body>",
        f"<h1>Index of {title}</h1><table>",
        "<tr><th>Name</th><th>Modified (UTC)</th><th>Size</th></tr>",
    ]
    if not at_root:
        parts.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    parts.extend(_row(name, not is_file, st) for is_file, name, st in rows)
    parts.append("</table></body></html>\n")
    return "\n".join(parts).encode("utf-8")
