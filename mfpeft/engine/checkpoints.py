"""Resumable training states that are complete when they exist and never execute code when read.

A checkpoint is ``<run>/checkpoints/checkpoint_<step>/``, written by every process into a temporary sibling
``.checkpoint_<step>.incomplete`` and renamed by the main process once whole:

- Accelerate's files: ``model.safetensors``, ``optimizer.bin`` (tensors and numbers), ``random_states_<rank>.pkl``
  (RNG states): read back with ``weights_only=True`` loading only, which cannot construct arbitrary objects;
- ``trainer_state.json``: mfpeft's own loop state and the learning-rate schedule, JSON (never a pickle: Accelerate
  would unpickle ``custom_checkpoint_*.pkl`` files with ``weights_only=False``, which runs whatever they hold);
- ``manifest.json``: every other file's name, size and sha256.

`verify_checkpoint` checks the manifest and that every pickle-format file loads under ``weights_only``, *before*
Accelerate reads anything; `find_checkpoint` resumes the newest checkpoint that verifies, saying which it skipped.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from ..common.files import install_folder, write_json
from ..errors import ensure_free_space

CHECKPOINT_DIR = "checkpoints"
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
INCOMPLETE = ".incomplete"
_PREFIX = "checkpoint_"
# Files Accelerate writes in pickle format; each must load with weights_only=True.
_PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: incomplete, damaged, or holding a file that would need unpickling."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file that is not what mfpeft writes (a pickle that is more than tensors, or an unlisted file)."""


def checkpoint_step(folder: Path) -> int | None:
    """The step of a ``checkpoint_<step>`` folder name, None for any other name."""
    tail = folder.name.removeprefix(_PREFIX)
    return int(tail) if folder.name.startswith(_PREFIX) and tail.isdigit() else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete-looking checkpoint folders, oldest step first."""
    folder = run_dir / CHECKPOINT_DIR
    found = [p for p in folder.glob(f"{_PREFIX}*") if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """List every file of ``folder`` (name, size, sha256) in its manifest."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    write_json(folder / MANIFEST, {"format": "mfpeft-checkpoint/1", "files": files})


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST} (incomplete, or not written by this mfpeft version)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != "mfpeft-checkpoint/1" or not isinstance(files, dict):
            raise ValueError("unknown format")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not a valid checkpoint manifest ({err})") from None
    return files


def _check_loads_without_pickle(path: Path) -> None:
    """Load a pickle-format file with ``weights_only=True`` (Accelerate's loader, numpy arrays allowed)."""
    from accelerate.utils import load

    try:
        load(path, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError) as err:
        first = " ".join(str(err).split())[:160]
        raise UnsafeCheckpointError(
            f"{path}: refused, it holds more than tensors and numbers and would have to be unpickled, which can run "
            f"code ({type(err).__name__}: {first}); resume only checkpoints mfpeft wrote"
        ) from None


def _check_readable(path: Path) -> None:
    """Parse a checkpoint file the way it will be read, without unpickling; refuse a kind mfpeft does not write."""
    if path.name.endswith(_PICKLE_SUFFIXES):
        _check_loads_without_pickle(path)
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                list(handle.keys())
        except Exception as err:  # safetensors raises its own error type for a damaged header
            raise CheckpointError(f"{path}: not a readable safetensors file ({' '.join(str(err).split())})") from None
    elif path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    else:
        raise UnsafeCheckpointError(f"{path}: refused, not a kind of file mfpeft writes in a checkpoint")


def verify_checkpoint(folder: Path) -> None:
    """Raise `CheckpointError` unless every file is listed, whole and safe to read.

    Nothing is unpickled: unlisted files are refused, sizes and sha256 must match, pickle-format files must load
    under ``weights_only``, safetensors and JSON files must parse.
    """
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    files = _read_manifest(folder)
    for path in sorted(folder.iterdir()):
        if path.name != MANIFEST and path.name not in files:
            raise UnsafeCheckpointError(f"{path}: refused, a file the checkpoint's {MANIFEST} does not list")
    for name, entry in files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise CheckpointError(f"{folder}: {name} listed in {MANIFEST} is missing")
        if path.stat().st_size != entry.get("size") or _sha256(path) != entry.get("sha256"):
            raise CheckpointError(f"{path}: size or sha256 differs from {MANIFEST} (truncated or changed)")
    for name in files:
        _check_readable(folder / name)
    if TRAINER_STATE not in files:
        raise CheckpointError(f"{folder}: no {TRAINER_STATE}")


def find_checkpoint(run_dir: Path, resume: str, say: Any = print) -> Path:
    """The verified checkpoint ``resume`` names: a folder, or "latest", the newest under ``run_dir`` that verifies.

    Damaged or incomplete newer checkpoints (a run killed while writing) are skipped with a message; an unsafe
    file is never skipped silently: it stops the resume.
    """
    if resume != "latest":
        verify_checkpoint(Path(resume))
        return Path(resume)
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise FileNotFoundError(f"--resume-from-checkpoint latest: no checkpoint in {run_dir / CHECKPOINT_DIR}")
    for folder in reversed(candidates):
        try:
            verify_checkpoint(folder)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as err:
            say(f"Skipping {folder.name}: {err}")
            continue
        return folder
    raise CheckpointError(f"--resume-from-checkpoint latest: no complete checkpoint in {run_dir / CHECKPOINT_DIR}")


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """A learning-rate scheduler's state as JSON-ready values (MultiStepLR keeps its milestones in a Counter)."""
    state = dict(scheduler.state_dict())
    if isinstance(state.get("milestones"), Counter):
        state["milestones"] = [[int(k), int(v)] for k, v in sorted(state["milestones"].items())]
    return state


def load_scheduler_state(scheduler: Any, state: dict[str, Any]) -> None:
    state = dict(state)
    if isinstance(state.get("milestones"), list):
        state["milestones"] = Counter({int(k): int(v) for k, v in state["milestones"]})
    scheduler.load_state_dict(state)


def save_checkpoint(
    accelerator: Any, run_dir: Path, step: int, trainer_state: dict[str, Any], keep: int, size_hint: int = 0
) -> Path:
    """Write ``checkpoint_<step>`` whole or not at all; then drop the oldest beyond ``keep`` (never before).

    Called on every process (each writes its RNG state); returns the final folder. ``size_hint`` (bytes) lets a
    disk that cannot hold it fail before anything is written, with the size in the message.
    """
    root = run_dir / CHECKPOINT_DIR
    final = root / f"{_PREFIX}{step}"
    tmp = root / f".{final.name}{INCOMPLETE}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        ensure_free_space(root, size_hint, f"checkpoint {final.name}")
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json(tmp / TRAINER_STATE, trainer_state, allow_nan=True)
            write_manifest(tmp)
            install_folder(tmp, final)  # every process wrote into the one staging name, known to all
            for old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, folder: Path) -> dict[str, Any]:
    """Restore a checkpoint that `find_checkpoint` verified into the prepared objects; returns its trainer state.

    Accelerate reads only what it wrote (no custom objects are registered, so no ``custom_checkpoint_*.pkl`` is
    ever opened), pickle-format files with ``weights_only=True``.
    """
    accelerator.load_state(str(folder))
    try:
        return dict(json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8")))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{folder / TRAINER_STATE}: not valid JSON ({err})") from None
