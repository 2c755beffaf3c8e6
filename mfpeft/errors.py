"""How a command ends: one line for a user error, the conventional status for a signal, a traceback on request.

A leaf module (no mfpeft imports) shared by the CLI and the recipes:

- `handle_signals` turns SIGTERM (what ``timeout``, ``docker stop`` and Slurm send) and SIGINT (Ctrl-C) into an
  `Interrupted` exception, so every ``finally`` / ``except BaseException`` on the way up deletes its temporary
  files exactly as for any other failure;
- `one_line_warnings` prints each warning as one ``PROG: warning: ...`` line (library deprecations dropped);
- `run_command` runs a command's function and turns what escapes it into one line on stderr and an exit status:
  1 for an error, 128 + N for signal N (130 Ctrl-C, 143 SIGTERM). ``--debug`` or ``MFPEFT_DEBUG=1`` re-raises
  instead, with the full traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = [
    "DEBUG_ENV",
    "Interrupted",
    "debug_requested",
    "ensure_free_space",
    "handle_signals",
    "one_line_warnings",
    "run_command",
]

DEBUG_ENV = "MFPEFT_DEBUG"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """Raised in the main thread when the process receives SIGTERM or SIGINT.

    A `BaseException` like `KeyboardInterrupt`, so ``except Exception`` blocks do not swallow it.
    """

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum = signum
        self.detail = detail  # what the interrupted work left, e.g. "resume with ..."; filled in on the way up
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def debug_requested(flag: bool = False) -> bool:
    """True when ``--debug`` was given or ``MFPEFT_DEBUG`` is set to anything but '', '0' or 'false'."""
    return flag or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


@contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise `Interrupted` (main thread only; elsewhere a no-op)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        # Once is enough: a second signal during clean-up must not interrupt the clean-up itself.
        for s in _SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, raise_interrupted)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Within the block, each warning is printed as one ``PROG: warning: MESSAGE`` line on stderr (not
    Python's two-line ``file:line: Category: message`` form); the previous behaviour is restored after.

    Deprecation warnings of other libraries (transformers, peft, rasterio) are dropped: they concern the code
    that calls them, and the user of the command can do nothing about them.
    """
    from pathlib import Path

    package = Path(__file__).resolve().parent

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, _DEPRECATIONS) and not Path(filename).resolve().is_relative_to(package):
            return
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the file system of ``path`` (its nearest existing parent), None if unknown."""
    import shutil
    from pathlib import Path

    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def ensure_free_space(path: str | os.PathLike[str], needed: int, what: str) -> None:
    """Raise ENOSPC before writing ``what`` (about ``needed`` bytes) under ``path`` when the disk cannot hold it.

    A pre-flight estimate: the write itself still reports a full disk if the estimate was short.
    """
    free = _free_bytes(path)
    if free is not None and free < needed:
        raise OSError(errno.ENOSPC, f"{what} needs about {_megabytes(needed)}, {_megabytes(free)} free", str(path))


def _describe(error: BaseException) -> str:
    """One line for an exception: the message, with the path an OSError carries and a disk-full explanation."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        known = error.strerror and error.strerror != os.strerror(errno.ENOSPC)
        free = _free_bytes(error.filename) if error.filename else None
        detail = error.strerror if known else (f"{_megabytes(free)} free" if free is not None else "")
        return (
            f"no space left on the device{where}"
            + (f" ({detail})" if detail else "")
            + "; free some space (or choose another output folder) and rerun; nothing partial was kept"
        )
    if isinstance(error, KeyError):
        text = f"missing key {error.args[0]!r}" if error.args else "missing key"
    else:
        text = str(error) or type(error).__name__
        if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
            text = f"{error.filename}: {text}"
    return " ".join(text.split())


def run_command(
    prog: str,
    func: Callable[[], int],
    *,
    debug: bool = False,
    on_interrupt: Callable[[], str] | None = None,
) -> int:
    """Run ``func`` under `handle_signals`; returns its status, or 1 / 128+N after one line on stderr.

    ``on_interrupt`` says, once the clean-up has run, what an interrupted run left (e.g. "nothing written at X"
    or "resume with ..."). Errors other than ValueError / OSError / KeyError are bugs: still one line, with a
    pointer to the traceback.
    """
    debug = debug_requested(debug)
    try:
        with handle_signals(), one_line_warnings(prog):
            return int(func())
    except (Interrupted, KeyboardInterrupt) as stop:
        status = stop.exit_status if isinstance(stop, Interrupted) else 130
        what = stop.args[0] if isinstance(stop, Interrupted) else "interrupted"
        detail = getattr(stop, "detail", "") or (on_interrupt() if on_interrupt is not None else "")
        print(f"{prog}: {what}" + (f"; {detail}" if detail else ""), file=sys.stderr)
        if debug:
            raise
        return status
    except (ValueError, OSError, KeyError) as error:
        if debug:
            raise
        print(f"{prog}: error: {_describe(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            raise
        print(
            f"{prog}: internal error: {type(error).__name__}: {_describe(error)} "
            f"(rerun with --debug or {DEBUG_ENV}=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
