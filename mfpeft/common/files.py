"""The one atomic writer: every file and folder mfpeft writes appears whole under its final name, or not at all.

A writer fills a hidden temporary sibling (same folder, so the final rename never crosses a file system) and
renames it into place when complete; an error, a full disk or a signal (`mfpeft.errors.Interrupted` is a
`BaseException`) removes the temporary and leaves any previous file untouched.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".partial-"
"""Part of every temporary name (``.<name>.partial-<pid>-<token><suffix>``): stale ones are found by it."""


def temporary_sibling(path: str | Path) -> Path:
    """A fresh hidden name beside ``path`` that keeps its suffix (so GDAL, matplotlib pick the format by it)."""
    target = Path(path)
    return target.with_name(f".{target.stem}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporaries of ``path`` left by a writer that was killed (SIGKILL, power loss) before it could clean up:
    those whose process (the pid in the name) no longer exists; a running writer's are not stale."""
    target = Path(path)
    prefix = f".{target.stem}{TEMP_MARK}"
    found = []
    for candidate in sorted(target.parent.glob(f"{prefix}*{target.suffix}")):
        pid = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            found.append(candidate)
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def install_folder(staged: str | Path, final: str | Path, *, merge: bool = False) -> Path:
    """Move the complete folder ``staged`` to ``final``. An existing ``final`` is set aside and deleted only after
    the swap; with ``merge`` each entry of ``staged`` replaces its namesake in ``final`` instead (each rename atomic)
    and ``final``'s other entries stay (an adapter saved into a run folder that also holds checkpoints)."""
    staged, final = Path(staged), Path(final)
    if merge and final.is_dir():
        for entry in staged.iterdir():
            if entry.is_dir() and (final / entry.name).exists():
                install_folder(entry, final / entry.name)
            else:
                os.replace(entry, final / entry.name)
        _remove(staged)
    elif final.exists():
        aside = temporary_sibling(final)
        final.rename(aside)
        staged.rename(final)
        _remove(aside)
    else:
        staged.rename(final)
    return final


@contextmanager
def atomic_path(path: str | Path, *, folder: bool = False, replace: bool = True, merge: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content into; renamed to ``path`` when the block succeeds.

    Args:
        path: the final file (or folder, with ``folder=True``: the temporary folder is created empty).
        replace: an existing ``path`` is replaced (a folder is set aside, swapped, then removed); False keeps an
            existing ``path`` and drops the new content (for caches where a concurrent builder won the race).
        merge: (folders) the new entries replace their namesakes in an existing folder (`install_folder`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(target)
    if folder:
        temp.mkdir()
    try:
        yield temp
        if target.exists() and not replace:
            return
        if folder:
            install_folder(temp, target, merge=merge)
        else:
            os.replace(temp, target)
    finally:
        if temp.exists():
            _remove(temp)


def write_atomically(path: str | Path, write: Callable[[Path], object], *, folder: bool = False) -> Path:
    """Call ``write(temp)`` and rename ``temp`` to ``path``; returns ``path`` (see `atomic_path`)."""
    with atomic_path(path, folder=folder) as temp:
        write(temp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomically(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomically(path, lambda temp: temp.write_bytes(data))


def write_json(path: str | Path, data: Mapping[str, Any], *, allow_nan: bool = False) -> Path:
    """Write ``data`` as indented JSON (strict unless ``allow_nan``: NaN is not JSON) to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=allow_nan) + "\n")


def save_figure(figure: Any, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Render a matplotlib ``Figure`` (Agg canvas: no display, no pyplot state) as a PNG at ``path`` atomically.
    The folder must exist: a typo in an output folder is an error, not a new folder."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    FigureCanvasAgg(figure)
    return write_atomically(target, lambda temp: figure.savefig(temp, dpi=dpi, format="png", facecolor="white"))
