"""Turning a ``--device`` string into a `torch.device` that exists on this machine, or a one-line error.

`torch.device` accepts any known device type whether or not this machine has one ("cuda" on a CPU-only
build), and rejects typos with a RuntimeError that lists every backend torch knows; the model then fails
later with a traceback. :func:`resolve_device` checks both the spelling and the availability up front, so
``predict``, ``heatmap`` and ``evaluate`` stop before loading anything, with a message that says what to type.
"""

from __future__ import annotations

import re

import torch

__all__ = ["resolve_device"]

# Device types a model can run on, each with a module exposing is_available() / device_count().
_ACCELERATORS = ("cuda", "mps", "xpu")
_SPELLING = re.compile(r"^(?P<type>[a-z]+)(?::(?P<index>\d+))?$")
_HINT = "use cpu, cuda, cuda:1 or mps"


def resolve_device(device: str | torch.device | None = None, *, what: str = "--device") -> torch.device:
    """The device ``device`` names, checked to exist here; None picks CUDA when available, else the CPU.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"xpu"``, ``"xpu:N"`` or a `torch.device`.
        what: how the caller names the setting in messages (the command-line flag by default).

    Raises:
        ValueError: a string that is not a device, or a device this machine does not have, e.g.
            ``--device cuda: CUDA is not available on this machine (...); use --device cpu``.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device).strip().lower()
    match = _SPELLING.match(text)
    if match is None or match["type"] not in ("cpu", *_ACCELERATORS):
        raise ValueError(f"{what} {device}: not a device; {_HINT}")
    kind, index = match["type"], match["index"]
    if kind == "cpu":
        if index not in (None, "0"):
            raise ValueError(f"{what} {device}: there is one CPU device; use {what} cpu")
        return torch.device("cpu")
    available, count = _availability(kind)
    if not available:
        raise ValueError(f"{what} {device}: {_why_unavailable(kind)}; use {what} cpu")
    if index is not None and int(index) >= count:
        names = ", ".join(f"{kind}:{i}" for i in range(count))
        raise ValueError(
            f"{what} {device}: this machine has {count} {kind.upper()} device(s) ({names}); "
            f"use one of them or {what} cpu"
        )
    return torch.device(text)


def _availability(kind: str) -> tuple[bool, int]:
    """(is available, device count) of an accelerator type; (False, 0) where this torch lacks the backend."""
    if kind == "mps":
        backend = getattr(torch.backends, "mps", None)
        available = bool(backend is not None and backend.is_available())
        return available, 1 if available else 0
    module = getattr(torch, kind, None)
    if module is None or not hasattr(module, "is_available"):
        return False, 0
    available = bool(module.is_available())
    return available, int(module.device_count()) if available else 0


def _why_unavailable(kind: str) -> str:
    """Why an accelerator type is missing: a torch build without it, or no device (or driver) found."""
    version = torch.__version__
    if kind == "cuda":
        if torch.version.cuda is None:
            return f"CUDA is not available on this machine (torch {version} is built without CUDA)"
        return (
            f"CUDA is not available on this machine (torch {version} is built for CUDA {torch.version.cuda} "
            "but no GPU or driver was found)"
        )
    if kind == "mps":
        return f"MPS is not available on this machine (it needs Apple silicon and macOS 12.3+; torch {version})"
    return f"{kind.upper()} is not available on this machine (torch {version})"
