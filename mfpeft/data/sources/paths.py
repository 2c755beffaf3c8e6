"""Finding the files of a tile: the first of several candidate names, optional files, split subfolders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


def require_dir(data_dir: Path | None, source: str) -> Path:
    if data_dir is None:
        raise ValueError(f"source {source!r} needs --data-dir")
    return data_dir


def first_existing(candidates: Iterable[Path], what: str, tile: str) -> Path:
    """The first candidate that is a file; else `FileNotFoundError` naming the tile and every name tried."""
    candidates = list(candidates)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"tile {tile!r}: {what} not found (tried {tried})")


def optional_file(candidates: Iterable[Path]) -> Path | None:
    for path in candidates:
        if path.is_file():
            return path
    return None


def find_dir(root: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None
