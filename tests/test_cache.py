"""The cache of generated folders: built once, atomically, nothing half-written on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfpeft.common.cache import cache_root, cached_folder


def test_built_once_then_reused(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "data.txt").write_text("x")

    root = tmp_path / "entry"
    assert cached_folder("entry", build, "stamp", cache_dir=tmp_path) == root
    assert cached_folder("entry", build, "stamp", cache_dir=tmp_path) == root
    assert len(calls) == 1 and calls[0] != root
    assert (root / "data.txt").read_text() == "x" and (root / "COMPLETE").read_text() == "stamp\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        (folder / "partial.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cached_folder("entry", build, "stamp", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MFPEFT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("MFPEFT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mfpeft"
