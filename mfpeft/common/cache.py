"""mfpeft's on-disk cache of generated artefacts (the demo data set, the demo encoder).

Each entry is a folder that is built once, in a temporary folder beside it, and renamed into place when complete
(`mfpeft.common.files.atomic_path`), so an interrupted build leaves nothing half-written and concurrent builders
(several training processes) end with one complete copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mfpeft.common.files import atomic_path

__all__ = ["cache_root", "cached_folder"]

COMPLETE_MARKER = "COMPLETE"


def cache_root() -> Path:
    """``$MFPEFT_CACHE``, else ``$XDG_CACHE_HOME/mfpeft``, else ``~/.cache/mfpeft``."""
    if os.environ.get("MFPEFT_CACHE"):
        return Path(os.environ["MFPEFT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mfpeft"


def cached_folder(name: str, build: Callable[[Path], None], stamp: str, cache_dir: str | Path | None = None) -> Path:
    """The entry ``name`` of the cache, built by ``build(tmp)`` into a temporary folder and renamed into place
    unless already complete.

    Args:
        name: the entry's folder name; the entry is complete when it holds the ``COMPLETE`` marker.
        build: writes the entry's files into the folder it is given (deterministic: a concurrent builder's copy
            is taken as identical).
        stamp: the marker's text (what was built).
        cache_dir: the cache's folder (default `cache_root`).
    """
    root = (Path(cache_dir).expanduser() if cache_dir is not None else cache_root()) / name
    if (root / COMPLETE_MARKER).is_file():
        return root
    # An entry without its marker (a folder left by hand) is rebuilt and replaced; otherwise a copy another
    # process installed while this one was building is kept (it was built from the same inputs).
    replace = root.exists()
    try:
        with atomic_path(root, folder=True, replace=replace) as staged:
            build(staged)
            (staged / COMPLETE_MARKER).write_text(stamp + "\n")
    except OSError:
        # Another process installed its copy between our check and our rename.
        if not (root / COMPLETE_MARKER).is_file():
            raise
    if not (root / COMPLETE_MARKER).is_file():
        raise FileExistsError(f"cache entry {root} exists but is incomplete (no {COMPLETE_MARKER} file); remove it")
    return root
