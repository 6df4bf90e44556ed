"""Request paths that must never leave the served directory (unit level)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.edge.safepath import SafeRoot, raw_path_refused


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "sub" / "ok.txt").write_text("ok")
    (r / ".well-known").mkdir()
    (r / ".well-known" / "security.txt").write_text("x")
    (r / ".git").mkdir()
    (r / ".git" / "config").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", r / "out-link.txt")
    os.symlink(r / "sub" / "ok.txt", r / "in-link.txt")
    os.mkfifo(r / "fifo")
    return r


@pytest.mark.parametrize(
    "raw",
    [b"/a%2fb", b"/a%2Fb", b"/a%5cb", b"/a%5C..", b"/a%00b", b"/a\\b", b"/%2e%2e%2f"],
)
def test_raw_path_refused(raw: bytes) -> None:
    assert raw_path_refused(raw)


@pytest.mark.parametrize("raw", [b"/a/b.txt", b"/caf%C3%A9", b"/a%20b", b"/%252e%252e"])
def test_raw_path_allowed(raw: bytes) -> None:
    assert not raw_path_refused(raw)


@pytest.mark.parametrize(
    "rel",
    [
        "/..",
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/./sub",
        "//etc/passwd",
        "/sub//ok.txt",
        "/sub\\..\\x",
        "/a\x00b",
        "sub/ok.txt",
        "/.git/config",
        "/sub/..",
    ],
)
def test_bad_segments(root: Path, rel: str) -> None:
    assert SafeRoot(str(root), dotfiles=False, follow_symlinks=False).lookup(rel) is None


def test_good_paths(root: Path) -> None:
    safe = SafeRoot(str(root), dotfiles=False, follow_symlinks=False)
    found = safe.lookup("/sub/ok.txt")
    assert found is not None and not found.is_dir
    d = safe.lookup("/sub/")
    assert d is not None and d.is_dir
    assert safe.lookup("/.well-known/security.txt") is not None
    assert safe.lookup("/in-link.txt") is not None  # a symlink that stays inside


def test_symlink_outside_refused_unless_allowed(root: Path) -> None:
    assert (
        SafeRoot(str(root), dotfiles=False, follow_symlinks=False).lookup("/out-link.txt") is None
    )
    assert SafeRoot(str(root), dotfiles=False, follow_symlinks=True).lookup("/out-link.txt")


def test_dotfiles_allowed_when_asked(root: Path) -> None:
    assert SafeRoot(str(root), dotfiles=True, follow_symlinks=False).lookup("/.git/config")


def test_special_files_look_missing(root: Path) -> None:
    assert SafeRoot(str(root), dotfiles=False, follow_symlinks=False).lookup("/fifo") is None


def test_root_that_is_a_symlink(tmp_path: Path, root: Path) -> None:
    link = tmp_path / "link-root"
    os.symlink(root, link)
    assert SafeRoot(str(link), dotfiles=False, follow_symlinks=False).lookup("/sub/ok.txt")
